"""The vLLM backend's adapter: prompts, sampling settings, stop strings, exact scoring, loading errors.

This checks the adapter against a stand-in with vLLM's documented shapes; it is
not a test of vLLM. vLLM cannot run here (it needs a GPU), so a fake ``vllm``
module is put in ``sys.modules``. It has what the adapter uses of vLLM's public
API (>= 0.10): ``LLM(model=..., **engine_args)``, ``LLM.get_tokenizer()``,
``LLM.generate(prompts, sampling_params=..., use_tqdm=...)`` taking
``{"prompt_token_ids": [...]}`` prompts and returning request outputs with
``.outputs[0].text / .token_ids / .finish_reason / .stop_reason`` and
``.prompt_logprobs`` (``None`` first, then ``{token_id: Logprob(logprob=...)}``
per prompt token), and ``SamplingParams``, which rejects unknown fields. Behind
it runs the tiny random-weight Llama of tests/models.py with transformers, so
the vLLM backend's greedy replies and scores can be compared with the ``hf``
backend's on the same model.
"""

from __future__ import annotations

import math
import os
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine.backends import load_backend  # noqa: E402
from engine.backends.base import BackendError, Chat, SamplingParams, ScoreRequest  # noqa: E402
from engine.backends.hf import HFBackend  # noqa: E402
from engine.backends.vllm import ENV_GPU_MEMORY, ENV_MAX_MODEL_LEN, ENV_TP, VLLMBackend  # noqa: E402
from tests.models import tiny_model_dir  # noqa: E402

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


def user(text: str) -> Chat:
    return [{"role": "user", "content": text}]


CHATS: list[Chat] = [
    user("Hi"),
    user("word " * 60),
    user("A medium length question about nothing in particular?"),
    [{"role": "system", "content": "Be brief."}, user("x " * 40)[0]],
    [*user("First turn"), {"role": "assistant", "content": "An answer."}, *user("And a follow-up " * 5)],
]

SCORE_REQUESTS = [
    ScoreRequest(chat=user("Which is better?"), options=("(A)", "(B)")),
    ScoreRequest(chat=user("Pick one."), options=(" Yes", "No", "", "No")),  # empty and repeated options
    ScoreRequest(chat=CHATS[4], options=("The first response is better because it is kind.", "(B) it is")),
    ScoreRequest(chat=user("Which is better?"), options=("(A)", "\n\nA long-ish option\nover lines")),
]


# ------------------------------------------------------------------ the stand-in


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool


class FakeSamplingParams:
    """vLLM's SamplingParams as far as the adapter uses it: defaults, stop normalisation, unknown fields refused."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "n": 1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "seed": None,
        "stop": None,
        "stop_token_ids": None,
        "ignore_eos": False,
        "max_tokens": 16,
        "min_tokens": 0,
        "logprobs": None,
        "prompt_logprobs": None,
        "detokenize": True,
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "include_stop_str_in_output": False,
    }

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected fields {sorted(unknown)}")
        self.__dict__.update({**self.DEFAULTS, **kwargs})
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise ValueError("stop cannot contain an empty string.")
        if self.temperature < 1e-5:
            self.top_p, self.top_k = 1.0, 0


_MODELS: dict[str, Any] = {}


class FakeLLM:
    """vLLM's LLM class with the tiny transformers model behind it (loaded lazily, shared by instances)."""

    ENGINE_ARGS: ClassVar[set[str]] = {
        "tokenizer",
        "dtype",
        "seed",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "enable_prefix_caching",
        "trust_remote_code",
        "enforce_eager",
    }
    instances: ClassVar[list[FakeLLM]] = []
    honour_stop: ClassVar[bool] = True
    prompt_logprobs_mode: ClassVar[str] = "full"  # "full", "none" (no list), "cached" (None for early positions)
    fail_to_load: ClassVar[str | None] = None

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - self.ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")
        if self.fail_to_load:
            raise RuntimeError(self.fail_to_load + "\nmore detail on the next line")
        from transformers import AutoTokenizer

        self.kwargs = {"model": model, **kwargs}
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.calls: list[tuple[list[dict[str, Any]], FakeSamplingParams, bool]] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def model(self) -> Any:
        path = self.kwargs["model"]
        if path not in _MODELS:
            from transformers import AutoModelForCausalLM, GenerationConfig

            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            eos = self.tokenizer.eos_token_id
            model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
            _MODELS[path] = model
        return _MODELS[path]

    def generate(
        self,
        prompts: Sequence[dict[str, Any]],
        sampling_params: FakeSamplingParams | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
    ) -> list[RequestOutput]:
        assert isinstance(sampling_params, FakeSamplingParams)
        self.calls.append((list(prompts), sampling_params, use_tqdm))
        limit = self.kwargs.get("max_model_len")
        outputs = []
        for n, prompt in enumerate(prompts):
            assert set(prompt) == {"prompt_token_ids"}, prompt
            ids = list(prompt["prompt_token_ids"])
            assert all(isinstance(i, int) for i in ids)
            if limit is not None and len(ids) + 1 > limit:
                raise ValueError(
                    f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of {limit}. "
                    "Make sure that `max_model_len` is no smaller than the number of text tokens."
                )
            with torch.inference_mode():
                logprobs = self._prompt_logprobs(ids, sampling_params)
                completion = self._complete(ids, sampling_params)
            outputs.append(RequestOutput(str(n), None, ids, logprobs, [completion], True))
        return outputs

    def _prompt_logprobs(self, ids: list[int], sp: FakeSamplingParams) -> list[dict[int, Logprob] | None] | None:
        if sp.prompt_logprobs is None or self.prompt_logprobs_mode == "none":
            return None
        assert sp.prompt_logprobs == 0, "the adapter asks only for each prompt token's own log-probability"
        logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        table = torch.log_softmax(logits, dim=-1)
        out: list[dict[int, Logprob] | None] = [None]
        for k in range(1, len(ids)):
            out.append({ids[k]: Logprob(logprob=float(table[k - 1, ids[k]]), rank=None)})
        if self.prompt_logprobs_mode == "cached":  # what old vLLMs did: nothing for prefix-cache hits
            out[: len(ids) - 1] = [None] * (len(ids) - 1)
        return out

    def _complete(self, ids: list[int], sp: FakeSamplingParams) -> CompletionOutput:
        eos = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": sp.max_tokens, "pad_token_id": eos}
        if sp.temperature > 0:
            kwargs.update(do_sample=True, temperature=sp.temperature, top_p=sp.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        with torch.random.fork_rng():
            torch.manual_seed(sp.seed or 0)
            tensor = torch.tensor([ids])
            sequence = self.model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), **kwargs)
        new = sequence[0, len(ids) :].tolist()
        finish, reason = "length", None
        if eos in new:  # vLLM keeps the end-of-text token in token_ids, not in the text
            new = new[: new.index(eos) + 1]
            finish = "stop"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if self.honour_stop and sp.stop:
            hits = [(pos, s) for s in sp.stop if (pos := text.find(s)) >= 0]
            if hits:
                pos, stop = min(hits)
                k = next(k for k in range(1, len(new) + 1) if stop in self.tokenizer.decode(new[:k]))
                new, text, finish, reason = new[:k], text[:pos], "stop", stop
        return CompletionOutput(0, text, new, None, None, finish, reason)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("vllm")
    module.__version__ = "0.11.0+fake"  # type: ignore[attr-defined]
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    for name in (ENV_TP, ENV_GPU_MEMORY, ENV_MAX_MODEL_LEN):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(FakeLLM, "instances", [])
    yield module


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def hf(tiny_dir: Path) -> HFBackend:
    return HFBackend(str(tiny_dir), batch_size=3, dtype="float32", device="cpu")


@pytest.fixture
def backend(fake_vllm: types.ModuleType, tiny_dir: Path) -> VLLMBackend:
    loaded = load_backend(f"vllm:{tiny_dir}", dtype="float32")
    assert isinstance(loaded, VLLMBackend)
    return loaded


def llm(backend: VLLMBackend) -> FakeLLM:
    assert isinstance(backend.llm, FakeLLM)
    return backend.llm


# ------------------------------------------------------------------ loading


def test_missing_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(BackendError, match=r"pip install 'cai-engine\[vllm\]'.*GPU"):
        load_backend("vllm:Qwen/Qwen2.5-7B-Instruct")


def test_llm_gets_prefix_caching_dtype_and_the_environment_settings(
    fake_vllm: types.ModuleType, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TP, "4")
    monkeypatch.setenv(ENV_GPU_MEMORY, "0.8")
    monkeypatch.setenv(ENV_MAX_MODEL_LEN, "4096")
    backend = load_backend(f"vllm:{tiny_dir}", dtype="bf16", batch_size=3)
    assert FakeLLM.instances[-1].kwargs == {
        "model": str(tiny_dir),
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 4096,
        "enable_prefix_caching": True,
    }
    assert backend.describe() == {
        "backend": "vllm",
        "model": str(tiny_dir),
        "name": str(tiny_dir),
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 4096,
        "enable_prefix_caching": True,
        "vllm": "0.11.0+fake",
    }


def test_defaults_without_environment(backend: VLLMBackend, tiny_dir: Path) -> None:
    assert llm(backend).kwargs == {
        "model": str(tiny_dir),
        "dtype": "float32",
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
    }  # no max_model_len: vLLM takes the model's own


def test_vllm_default_is_the_converted_embedded_model(fake_vllm: types.ModuleType) -> None:
    from engine.backends.default_model import DEFAULT_MODEL_NAME, default_model_path

    backend = load_backend("vllm:default")
    assert FakeLLM.instances[-1].kwargs["model"] == str(default_model_path())
    assert backend.name == DEFAULT_MODEL_NAME
    assert backend.describe()["name"] == DEFAULT_MODEL_NAME


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (ENV_TP, "two", "not a whole number"),
        (ENV_TP, "0", "at least 1"),
        (ENV_GPU_MEMORY, "90", "at most 1"),
        (ENV_GPU_MEMORY, "lots", "not a number"),
        (ENV_MAX_MODEL_LEN, "8k", "not a whole number"),
    ],
)
def test_bad_environment_settings_are_named(
    fake_vllm: types.ModuleType,
    tiny_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(BackendError, match=rf"\${variable}=.*{message}"):
        load_backend(f"vllm:{tiny_dir}")


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("vllm:", {}, "no model"),
        ("vllm:TINY", {"dtype": "int3"}, "unknown dtype"),
        ("vllm:TINY", {"device": "cpu"}, "runs on GPUs"),
        ("vllm:TINY", {"device": "cuda:1"}, "CUDA_VISIBLE_DEVICES=1"),
        ("vllm:./no/such/folder", {}, "no such model folder"),
    ],
)
def test_bad_specs_and_options(
    fake_vllm: types.ModuleType, tiny_dir: Path, spec: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        load_backend(spec.replace("TINY", str(tiny_dir)), **options)  # type: ignore[arg-type]


def test_a_failed_load_is_a_backend_error_with_hints(
    fake_vllm: types.ModuleType, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeLLM, "fail_to_load", "CUDA out of memory")
    with pytest.raises(BackendError, match=r"cannot load the model: CUDA out of memory \(.*CAI_VLLM_TP") as info:
        load_backend(f"vllm:{tiny_dir}")
    assert "next line" not in str(info.value)


# ------------------------------------------------------------------ generate


def test_prompts_are_the_hf_backends_token_ids(backend: VLLMBackend, hf: HFBackend) -> None:
    backend.generate(CHATS, GREEDY)
    sent = [p["prompt_token_ids"] for p in llm(backend).calls[-1][0]]
    assert sent == hf.encode([hf.render(chat) for chat in CHATS])


def test_greedy_generate_equals_the_hf_backend_in_one_call(backend: VLLMBackend, hf: HFBackend) -> None:
    replies = backend.generate(CHATS, GREEDY)
    assert replies == hf.generate(CHATS, GREEDY)
    assert len({c.text for c in replies}) > 1  # different replies, so the order check means something
    calls = llm(backend).calls
    assert len(calls) == 1 and len(calls[0][0]) == len(CHATS)  # vLLM batches; no chunks on our side
    assert calls[0][2] is False  # no vLLM progress bar


def test_sampling_params_mapping(backend: VLLMBackend) -> None:
    backend.generate(CHATS[:1], SamplingParams(max_new_tokens=5, temperature=0, top_p=0.5, seed=3))
    greedy = llm(backend).calls[-1][1]
    assert (greedy.max_tokens, greedy.temperature, greedy.top_p, greedy.seed, greedy.stop) == (5, 0.0, 1.0, 3, [])
    assert (greedy.top_k, greedy.repetition_penalty, greedy.n) == (0, 1.0, 1)  # nothing beyond SamplingParams
    backend.generate(CHATS[:1], SamplingParams(max_new_tokens=7, temperature=0.7, top_p=0.95, seed=5, stop=("", "\n")))
    sampled = llm(backend).calls[-1][1]
    assert (sampled.max_tokens, sampled.temperature, sampled.top_p, sampled.seed) == (7, 0.7, 0.95, 5)
    assert sampled.stop == ["\n"]  # vLLM refuses empty stop strings


def test_sampled_generation_is_seeded(backend: VLLMBackend) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=11)
    first = backend.generate(CHATS[:2], params)
    assert backend.generate(CHATS[:2], params) == first
    assert backend.generate(CHATS[:2], params.model_copy(update={"seed": 12})) != first


@pytest.mark.parametrize("honour_stop", [True, False])
def test_stop_strings_are_cut(backend: VLLMBackend, monkeypatch: pytest.MonkeyPatch, honour_stop: bool) -> None:
    monkeypatch.setattr(FakeLLM, "honour_stop", honour_stop)  # False: only our own cut removes it
    full = backend.generate(CHATS[2:3], GREEDY)[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip() and full.find(stop) > 0
    cut = backend.generate(CHATS[2:3], GREEDY.model_copy(update={"stop": (stop,)}))[0]
    assert cut.text == full[: full.find(stop)].strip()
    assert stop not in cut.text


def test_the_end_of_text_token_is_not_counted(backend: VLLMBackend) -> None:
    eos = backend.tokenizer.eos_token_id

    def completion(finish: str | None, reason: int | str | None) -> Any:
        return CompletionOutput(0, " Hello there ", [101, 102, eos], None, None, finish, reason)

    assert backend._completion(completion("stop", None), []).tokens == 2  # ended by the end-of-text token
    assert backend._completion(completion("length", None), []).tokens == 3
    assert backend._completion(completion("stop", "there"), []).tokens == 3  # ended by a stop string
    assert backend._completion(completion("stop", None), []).text == "Hello there"


def test_a_prompt_longer_than_max_model_len_is_a_backend_error(
    fake_vllm: types.ModuleType, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MAX_MODEL_LEN, "40")
    backend = load_backend(f"vllm:{tiny_dir}")
    with pytest.raises(BackendError, match=r"longer than the maximum model length.*CAI_VLLM_MAX_MODEL_LEN"):
        backend.generate(CHATS[1:2], GREEDY)


# ------------------------------------------------------------------ score


def test_option_tokens_follow_the_hf_rule(backend: VLLMBackend, hf: HFBackend) -> None:
    for request in SCORE_REQUESTS:
        prompt = hf.render(request.chat)
        prompt_ids = hf.encode([prompt])[0]
        assert backend.option_ids(prompt, prompt_ids, request.options) == hf.option_ids(
            prompt, prompt_ids, request.options
        )
    # A boundary the tokenizer merges across: the option is then tokenized on its own, in both.
    assert backend.option_ids("ab", hf.encode(["ab"])[0], ["c", " d"]) == hf.option_ids(
        "ab", hf.encode(["ab"])[0], ["c", " d"]
    )


def test_scores_equal_the_hf_backend(backend: VLLMBackend, hf: HFBackend) -> None:
    got = backend.score(SCORE_REQUESTS)
    want = hf.score(SCORE_REQUESTS)
    assert [len(row) for row in got] == [len(r.options) for r in SCORE_REQUESTS]
    for got_row, want_row in zip(got, want, strict=True):
        for g, w in zip(got_row, want_row, strict=True):
            assert math.isfinite(g) and g <= 0
            assert abs(g - w) < 1e-4, (got, want)
    assert got[1][2] == 0.0  # the empty option
    assert got[1][1] == got[1][3]  # a repeated option


def test_score_is_one_call_of_distinct_sequences_with_prompt_logprobs(backend: VLLMBackend) -> None:
    backend.score(SCORE_REQUESTS)
    (prompts, params, use_tqdm), *rest = llm(backend).calls
    assert not rest and use_tqdm is False
    # 9 non-empty options, "No" twice and "(A)" after the same chat twice: 7 distinct sequences
    assert len(prompts) == 7
    assert (params.prompt_logprobs, params.max_tokens, params.temperature, params.top_p) == (0, 1, 1.0, 1.0)
    assert backend.score([]) == [] and backend.score([ScoreRequest(chat=user("x"), options=("",))]) == [[0.0]]


@pytest.mark.parametrize(("mode", "message"), [("none", "no usable prompt log-probabilities"), ("cached", "position")])
def test_missing_prompt_logprobs_are_an_error_not_a_score(
    backend: VLLMBackend, monkeypatch: pytest.MonkeyPatch, mode: str, message: str
) -> None:
    monkeypatch.setattr(FakeLLM, "prompt_logprobs_mode", mode)
    with pytest.raises(BackendError, match=rf"vLLM 0\.11\.0\+fake returned .*{message}"):
        backend.score(SCORE_REQUESTS[:1])
