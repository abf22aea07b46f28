"""An in-process vLLM backend: the model runs inside this process on one or more GPUs.

Install with ``pip install 'cai-engine[vllm]'`` on a machine with a GPU that
vLLM supports (it needs CUDA or ROCm; there is no CPU route here: use the
``hf`` backend there). vLLM is imported only when the backend is created.

Model spec
    ``vllm:NAME_OR_PATH``: a hub id or a model folder (e.g. one written by
    ``cai train``), as ``hf:`` takes them; ``vllm:default`` is the embedded
    SmolLM2-135M-Instruct (its converted folder).

Settings from the environment (kept out of the spec, which names the model in a run's manifest)
    ``CAI_VLLM_TP``: GPUs the model is split over (tensor parallelism,
    default 1); ``CAI_VLLM_GPU_MEMORY``: the share of each GPU's memory vLLM
    may take for weights, activations and the KV cache (default 0.9, vLLM's);
    ``CAI_VLLM_MAX_MODEL_LEN``: the longest prompt plus reply in tokens
    (default: the model's own limit; lower it when the KV cache does not fit).
    Which GPUs are used is ``CUDA_VISIBLE_DEVICES``'s business. ``--dtype``
    maps to vLLM's ``dtype`` (``auto``: the checkpoint's). ``--batch-size``
    is not used: vLLM schedules the requests of a call itself (continuous
    batching), so pass many at once (``--chunk-size``).

Prompts
    Every chat is rendered with the model's own tokenizer and chat template
    (``add_generation_prompt=True``) and tokenized without special tokens
    added, exactly as the ``hf`` backend does, and vLLM gets the token ids, so
    both backends feed the model the same tokens. Prefix caching is always on:
    the critique loop's prompts share long prefixes (the conversation, then
    the principle's critique and revision requests), which vLLM computes once.

Sampling
    One vLLM ``SamplingParams`` per call: ``max_tokens``, ``temperature`` (0 is
    greedy), ``top_p``, ``seed`` and ``stop``; no top-k or penalties, and the
    checkpoint's ``generation_config.json`` sampling defaults do not apply, so
    :class:`~engine.backends.base.SamplingParams` fully describes it. The seed
    is per request: a sampled reply depends on its own conversation, not on
    what else was in the call (up to vLLM's floating-point differences
    between batch compositions). Replies end at an end-of-text token, and stop
    strings are also cut on this side. ``Completion.tokens`` counts the
    generated tokens, not counting a final end-of-text token (as ``hf`` does).

Scoring (exact, like the ``hf`` backend's)
    Each non-empty option becomes one request of prompt + option tokens (the
    option tokenized as it continues the rendered prompt, the ``hf`` rule)
    with ``prompt_logprobs=0``, which returns the log-probability of each
    prompt token itself, and ``max_tokens=1``. An option's score is the sum
    over its tokens. vLLM computes prompt log-probabilities only for tokens it
    runs through the model, so it skips the prefix cache for such requests
    (vLLM >= 0.9; see the V1 guide, "Prompt Logprobs with Prefix Caching"):
    scoring is exact but does not profit from the cache, each option costs a
    full prompt pass. A reply without a log-probability for an option token
    is an error (:class:`BackendError`), never a guess.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from engine.backends.base import (
    Backend,
    BackendError,
    Chat,
    Completion,
    SamplingParams,
    ScoreRequest,
    first_line,
    locate_model,
)
from engine.backends.tokens import continuation_ids, cut_at_stop, render_chat

INSTALL_HINT = "pip install 'cai-engine[vllm]' (on a machine with a GPU that vLLM supports)"
ENV_TP = "CAI_VLLM_TP"
ENV_GPU_MEMORY = "CAI_VLLM_GPU_MEMORY"
ENV_MAX_MODEL_LEN = "CAI_VLLM_MAX_MODEL_LEN"
DEFAULT_GPU_MEMORY = 0.9
"""vLLM's own default for ``gpu_memory_utilization``."""

DTYPES = {
    "auto": "auto",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}
"""Our ``--dtype`` names as vLLM's ``dtype`` values."""


def _env_int(name: str, default: int | None, minimum: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BackendError(f"${name}={raw!r}: not a whole number") from None
    if value < minimum:
        raise BackendError(f"${name}={raw!r}: must be at least {minimum}")
    return value


def _env_fraction(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BackendError(f"${name}={raw!r}: not a number") from None
    if not 0 < value <= 1:
        raise BackendError(f"${name}={raw!r}: a share of GPU memory, above 0 and at most 1 (e.g. 0.85)")
    return value


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name and exc.name != "vllm" else ""
        raise BackendError(f"the vllm backend needs vLLM{missing}: {INSTALL_HINT}") from None
    return vllm


class VLLMBackend(Backend):
    """A model served in this process by vLLM (a local folder or a hub id), prefix caching on.

    Args:
        model: A model folder or a Hugging Face hub id.
        name: Name recorded in provenance (default: ``model``).
        dtype: ``auto`` (the checkpoint's), ``bfloat16``, ``float16`` or ``float32``.
        device: ``auto`` or ``cuda`` (vLLM picks its GPUs: ``CUDA_VISIBLE_DEVICES``).
        tensor_parallel_size: GPUs to split the model over (default: ``$CAI_VLLM_TP``, else 1).
        gpu_memory_utilization: Share of each GPU's memory for vLLM
            (default: ``$CAI_VLLM_GPU_MEMORY``, else 0.9).
        max_model_len: Most tokens of prompt plus reply (default:
            ``$CAI_VLLM_MAX_MODEL_LEN``, else the model's limit).

    Raises:
        BackendError: vLLM is not installed, a setting is invalid, or vLLM
            cannot load the model (no GPU, out of memory, unknown model...).
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        tensor_parallel_size: int | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.model_ref = model
        self.name = name or model
        try:
            self.dtype = DTYPES[dtype.lower()]
        except KeyError:
            raise BackendError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32") from None
        if device.startswith("cuda:"):
            index = device.removeprefix("cuda:")
            raise BackendError(f"device {device!r}: vLLM picks its GPUs itself; use CUDA_VISIBLE_DEVICES={index}")
        if device not in ("auto", "cuda"):
            raise BackendError(f"device {device!r}: the vllm backend runs on GPUs; use --model hf:... for the CPU")
        self.tensor_parallel_size = tensor_parallel_size or _env_int(ENV_TP, 1, minimum=1) or 1
        self.gpu_memory_utilization = gpu_memory_utilization or _env_fraction(ENV_GPU_MEMORY, DEFAULT_GPU_MEMORY)
        self.max_model_len = max_model_len or _env_int(ENV_MAX_MODEL_LEN, None, minimum=1)
        self._vllm = _import_vllm()
        source = locate_model(model)
        self.vllm_version = str(getattr(self._vllm, "__version__", "unknown"))
        kwargs: dict[str, Any] = {
            "model": source,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enable_prefix_caching": True,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        try:
            self.llm = self._vllm.LLM(**kwargs)
        except Exception as exc:
            raise BackendError(
                f"{model}: vLLM cannot load the model: {first_line(exc)} (vLLM needs a GPU it supports; "
                f"out of GPU memory: lower ${ENV_MAX_MODEL_LEN}, raise ${ENV_GPU_MEMORY} or split the model "
                f"over more GPUs with ${ENV_TP})"
            ) from None
        self.tokenizer = self.llm.get_tokenizer()
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"{model}: the tokenizer has no chat template; use an instruction-tuned (chat) model")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "model": self.model_ref,
            "name": self.name,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "enable_prefix_caching": True,
            "vllm": self.vllm_version,
        }

    # --------------------------------------------------------------- encoding

    def render(self, chat: Chat) -> str:
        """The chat as the model sees it, ending with the assistant's generation prompt."""
        return render_chat(self.tokenizer, chat, self.name)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with no special tokens added (chat templates write their own)."""
        return [list(self.tokenizer.encode(text, add_special_tokens=False)) for text in texts]

    def option_ids(self, prompt: str, prompt_ids: Sequence[int], options: Sequence[str]) -> list[list[int]]:
        """The token ids of each option as it continues ``prompt`` (see :func:`continuation_ids`)."""
        return continuation_ids(self.encode, prompt, prompt_ids, options)

    def _run(self, token_lists: Sequence[Sequence[int]], params: Any) -> list[Any]:
        prompts = [{"prompt_token_ids": list(ids)} for ids in token_lists]
        try:
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        except ValueError as exc:  # e.g. a prompt longer than max_model_len
            raise BackendError(
                f"{self.name}: vLLM rejected a request: {first_line(exc)} (the longest prompt plus reply "
                f"vLLM takes is set by ${ENV_MAX_MODEL_LEN})"
            ) from None
        result = list(outputs)
        if len(result) != len(prompts):
            raise BackendError(f"{self.name}: vLLM returned {len(result)} results for {len(prompts)} requests")
        return result

    # -------------------------------------------------------------- generate

    def sampling_params(self, params: SamplingParams) -> Any:
        """The vLLM ``SamplingParams`` of one ``generate`` call."""
        greedy = params.temperature == 0
        return self._vllm.SamplingParams(
            n=1,
            max_tokens=params.max_new_tokens,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            seed=params.seed,
            stop=[s for s in params.stop if s] or None,
        )

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        if not chats:
            return []
        prompts = self.encode([self.render(chat) for chat in chats])
        stops = [s for s in params.stop if s]
        outputs = self._run(prompts, self.sampling_params(params))
        return [self._completion(out.outputs[0], stops) for out in outputs]

    def _completion(self, output: Any, stops: Sequence[str]) -> Completion:
        token_ids = list(output.token_ids)
        count = len(token_ids)
        # vLLM keeps the end-of-text token that ended a reply in token_ids (stop_reason None, finish_reason
        # "stop"); the hf backend does not count it, and neither does this one.
        ended_by_eos = getattr(output, "finish_reason", None) == "stop" and getattr(output, "stop_reason", 0) is None
        special = set(getattr(self.tokenizer, "all_special_ids", ()) or ())
        if ended_by_eos and token_ids and token_ids[-1] in special:
            count -= 1
        return Completion(text=cut_at_stop(str(output.text), stops).strip(), tokens=count)

    # ----------------------------------------------------------------- score

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        texts = [self.render(r.chat) for r in requests]
        prompt_ids = self.encode(texts)
        scores = [[0.0] * len(r.options) for r in requests]  # an empty option has probability 1
        # One vLLM request per distinct prompt + option sequence: (where its option starts, its tokens).
        sequences: dict[tuple[int, ...], int] = {}
        wanted: list[tuple[int, int, int]] = []  # (request, option, sequence)
        for i, (r, text, p_ids) in enumerate(zip(requests, texts, prompt_ids, strict=True)):
            for o, tokens in enumerate(self.option_ids(text, p_ids, r.options)):
                if tokens:
                    key = (len(p_ids), *p_ids, *tokens)
                    wanted.append((i, o, sequences.setdefault(key, len(sequences))))
        if not sequences:
            return scores
        keys = list(sequences)
        params = self._vllm.SamplingParams(
            n=1, max_tokens=1, temperature=1.0, top_p=1.0, prompt_logprobs=0, detokenize=False
        )
        outputs = self._run([key[1:] for key in keys], params)
        sums = [self._option_logprob(out, key[1:], key[0]) for out, key in zip(outputs, keys, strict=True)]
        for i, o, s in wanted:
            scores[i][o] = sums[s]
        return scores

    def _option_logprob(self, output: Any, ids: Sequence[int], start: int) -> float:
        """Sum of the prompt log-probabilities of ``ids[start:]`` in one vLLM result."""
        logprobs = getattr(output, "prompt_logprobs", None)
        if logprobs is None or len(logprobs) != len(ids):
            got = "none" if logprobs is None else f"{len(logprobs)} positions for {len(ids)} tokens"
            raise BackendError(
                f"{self.name}: vLLM {self.vllm_version} returned no usable prompt log-probabilities for a "
                f"scoring request ({got}); the vllm backend needs prompt_logprobs for every prompt token"
            )
        total = 0.0
        for pos in range(start, len(ids)):
            entry = logprobs[pos]
            found = entry.get(ids[pos]) if entry is not None else None
            if found is None:
                raise BackendError(
                    f"{self.name}: vLLM {self.vllm_version} returned no log-probability for token {ids[pos]} at "
                    f"position {pos} of a scoring request (option tokens {start}..{len(ids) - 1}); with prefix "
                    "caching, a vLLM that reads cached blocks for prompt_logprobs requests leaves them out: "
                    "upgrade vLLM or use the hf backend for scoring"
                )
            total += float(found.logprob)
        return total


def from_spec(spec: str, *, dtype: str = "auto", device: str = "auto") -> VLLMBackend:
    """The backend a ``vllm:NAME_OR_PATH`` spec names (``vllm:default``: the embedded model's folder)."""
    model = spec.removeprefix("vllm:").strip()
    if not model:
        raise BackendError(f"{spec}: no model; use vllm:NAME_OR_PATH (e.g. vllm:Qwen/Qwen2.5-7B-Instruct)")
    if model == "default":
        from engine.backends.default_model import DEFAULT_MODEL_NAME, default_model_path

        return VLLMBackend(str(default_model_path()), name=DEFAULT_MODEL_NAME, dtype=dtype, device=device)
    return VLLMBackend(model, dtype=dtype, device=device)


__all__ = ["ENV_GPU_MEMORY", "ENV_MAX_MODEL_LEN", "ENV_TP", "VLLMBackend", "from_spec"]
