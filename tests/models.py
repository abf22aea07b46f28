"""Small real models for tests: a tiny random-weight Llama with the real SmolLM2 tokenizer.

The tiny model runs in milliseconds, so tests can check the transformers
backend's batching, sampling and scoring exactly; its text is gibberish. Its
tokenizer (and chat template) is the one of the embedded default model, taken
from the converted default-model folder.

Use from a test module::

    @pytest.fixture(scope="session")
    def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tiny_model_dir(tmp_path_factory.mktemp("tiny"))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
_DONE = "tiny-model.json"


def _complete(folder: Path) -> bool:
    return (folder / _DONE).is_file()


def build_tiny_model(tokenizer_dir: Path, out: Path) -> Path:
    """Write a tiny random Llama (seeded, fp32) with the tokenizer of ``tokenizer_dir`` to ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        **TINY_CONFIG,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # fp32: torch's default dtype
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / _DONE).write_text(json.dumps({"tokenizer": str(tokenizer_dir), **TINY_CONFIG}) + "\n", encoding="utf-8")
    return out


def build_tiny_reward_model(tokenizer_dir: Path, out: Path) -> Path:
    """Write a tiny random Llama preference model (one scalar output, seeded, fp32) with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        **TINY_CONFIG,
        vocab_size=len(tokenizer),
        num_labels=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def tiny_model_dir(tmp_root: Path) -> Path:
    """A folder holding the tiny model: the user-cache copy if there is one, else built under ``tmp_root``.

    A freshly built model is also copied into the user cache (atomically, best
    effort) so later test sessions skip building it. Tests must not write into
    the returned folder.
    """
    import transformers

    from engine.backends.default_model import cache_dir, default_model_path

    source = default_model_path()
    key = hashlib.sha256(json.dumps([source.name, transformers.__version__, TINY_CONFIG]).encode()).hexdigest()[:10]
    cached = cache_dir() / "test-models" / f"tiny-llama-{key}"
    if _complete(cached):
        return cached
    built = tmp_root / "tiny-llama"
    if not _complete(built):
        build_tiny_model(source, built)
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.tmp-", dir=cached.parent))
        try:
            shutil.copytree(built, tmp, dirs_exist_ok=True)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return built
