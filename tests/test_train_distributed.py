"""`cai train` under `accelerate launch`: the shipped config files, and real 2-process runs on the CPU.

The CPU runs use the shipped ``ddp.yaml``: on a machine without GPUs
accelerate starts the processes with torchrun and they train as MULTI_CPU
(gloo), the CPU form of DDP. accelerate applies FSDP and DeepSpeed only to
GPUs, so those two files are checked here as files, not run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from engine.train import TrainError, TrainOptions
from engine.train.distributed import sharding
from engine.train.preflight import prepare
from engine.train.recipes import ACCELERATE_DIR, accelerate_config, accelerate_configs
from tests.models import tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cai generate` run folder made by the scripted backend (6 pairs, 6 SFT rows)."""
    out = tmp_path_factory.mktemp("gen") / "run"
    generate(GenerateConfig(out=out, model="scripted", prompts="mixed", limit=6, revisions=1), progress=False)
    return out


# ----------------------------------------------------------------------------- the shipped files


def test_shipped_accelerate_configs_are_what_accelerate_reads() -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    configs = accelerate_configs()
    assert set(configs) == set(EXPECTED)
    for name, path in configs.items():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["distributed_type"] == EXPECTED[name], name
        assert data["num_processes"] == 8 and data["num_machines"] == 1
        assert data["mixed_precision"] == "no", f"{name}: precision is cai train's (--bf16), not the launcher's"
        loaded = load_config_from_file(str(path))  # accelerate's own reader: unknown keys are a TypeError
        assert isinstance(loaded, ClusterConfig) and loaded.distributed_type.value == EXPECTED[name]
    fsdp = yaml.safe_load(configs["fsdp"].read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # save_model gathers one plain model folder
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is False  # else GRPO's judge is empty on ranks other than 0
    zero = yaml.safe_load(configs["zero3"].read_text())["deepspeed_config"]
    assert zero["zero_stage"] == 3 and zero["zero3_init_flag"] is True and zero["zero3_save_16bit_model"] is True


def test_accelerate_configs_are_package_data() -> None:
    import tomllib  # Python 3.11+

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engine"]
    for path in accelerate_configs().values():
        relative = path.relative_to(ROOT / "engine").as_posix()
        assert any(fnmatch(relative, g) and g.count("/") == relative.count("/") for g in globs), relative


def test_accelerate_config_prints_the_path_and_refuses_unknown_names() -> None:
    result = CliRunner().invoke(cli, ["train", "accelerate-config", "fsdp"])
    assert result.exit_code == 0
    printed = Path(result.output.strip())
    assert printed.is_absolute() and printed.is_file() and printed == ACCELERATE_DIR / "fsdp.yaml"
    assert accelerate_config("zero3.yaml") == ACCELERATE_DIR / "zero3.yaml"
    bad = CliRunner().invoke(cli, ["train", "accelerate-config", "fdsp"])
    assert bad.exit_code == 2
    assert "no shipped accelerate config" in bad.output and "did you mean 'fsdp'" in bad.output
    assert "ddp, fsdp, zero3" in bad.output
    listed = CliRunner().invoke(cli, ["train", "recipes"]).output
    assert all(str(p) in listed for p in accelerate_configs().values())


def test_accelerate_config_is_cheap_enough_for_a_command_line() -> None:
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "sys.argv = ['cai', 'train', 'accelerate-config', 'ddp']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'accelerate') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == str(ACCELERATE_DIR / "ddp.yaml")
    assert "HEAVY []" in done.stderr


# ----------------------------------------------------------------------------- sharded runs refuse what cannot work


@pytest.mark.parametrize(
    ("env", "kind", "lora", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "sft", True, "--lora under FSDP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "dpo", True, "ZeRO-3"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "grpo", False, "judge"),
    ],
)
def test_lora_and_grpo_judge_on_sharded_weights_are_refused_before_loading(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kind: str, lora: bool, message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = TrainOptions(kind=kind, data=run, out=tmp_path / "out", lora=lora)
    with pytest.raises(TrainError, match=message) as caught:
        prepare(options)
    assert "ddp" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_sharding_reads_the_launcher_and_deepspeed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(key, raising=False)
    assert sharding() is None
    assert sharding({"fsdp": "full_shard auto_wrap"}) == "FSDP"
    zero2 = tmp_path / "ds2.json"
    zero2.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert sharding({"deepspeed": str(zero2)}) is None  # ZeRO-2 keeps whole weights: LoRA can merge
    assert sharding({"deepspeed": {"zero_optimization": {"stage": 3}}}) == "DeepSpeed ZeRO-3"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(zero2))
    assert sharding() is None
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert sharding() == "DeepSpeed ZeRO-3"


# ----------------------------------------------------------------------------- real 2-process runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``accelerate launch --config_file ddp.yaml --num_processes 2 -m engine ARGS`` on this machine."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("ddp"))]
    argv += ["--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "engine", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def check_model_folder(out: Path, base: Path) -> dict[str, object]:
    """One plain model with its card, written once; it loads back and differs from the base; the provenance."""
    import torch
    from transformers import AutoModelForCausalLM

    weights = sorted(p.name for p in out.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    assert weights == ["model.safetensors"]  # no training_args.bin, no adapter, no per-process copies
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    after, before = trained.state_dict(), original.state_dict()
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before), "training changed no parameter"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(trained(ids).logits).all()
    provenance: dict[str, object] = json.loads((out / "cai-train.json").read_text())
    return provenance


def _last_state(out: Path) -> dict[str, object]:
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-2"]
    state: dict[str, object] = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    return state


COMMON = ["--max-steps", "2", "--batch-size", "2", "--max-length", "128", "--no-gradient-checkpointing"]
COMMON += ["--learning-rate", "1e-3", "--logging-steps", "1", "--save-steps", "2", "--set", "disable_tqdm=true"]


@pytest.mark.slow
def test_sft_with_lora_under_accelerate_launch_on_two_processes(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    args = ["train", "sft", "--data", str(run), "--out", str(out), "--model", str(tiny_dir), *COMMON]
    done = launch([*args, "--lora", "--lora-r", "4"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the main process reports, once, and says how many processes trained
    assert done.stdout.count("trained sft for 2 steps") == 1, done.stdout
    assert "on 2 processes (MULTI_CPU)" in done.stdout
    provenance = check_model_folder(out, tiny_dir)  # the adapter was merged, on the main process only
    assert provenance["processes"] == 2 and provenance["distributed"] == "MULTI_CPU"
    assert "2 processes (MULTI_CPU)" in (out / "README.md").read_text()
    # 6 rows, 2 per process and step: two steps over two processes are one epoch (one process would do 2/3)
    assert _last_state(out)["epoch"] == pytest.approx(1.0)


@pytest.mark.slow
def test_dpo_under_accelerate_launch_on_two_processes(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    args = ["train", "dpo", "--data", str(run), "--out", str(out), "--model", str(tiny_dir), *COMMON]
    done = launch(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained dpo for 2 steps") == 1, done.stdout
    assert "on 2 processes (MULTI_CPU)" in done.stdout
    provenance = check_model_folder(out, tiny_dir)
    assert provenance["processes"] == 2 and provenance["kind"] == "dpo" and provenance["steps"] == 2
    assert _last_state(out)["epoch"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_preference_model_under_accelerate_launch_scores_each_heldout_pair_once(
    run: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    from engine.train.rm_data import reward_data

    out = tmp_path / "rm"
    args = ["train", "rm", "--data", str(run), "--out", str(out), "--model", str(tiny_dir), "--heldout", "0.5"]
    done = launch([*args, "--labels", "hard", "--seed", "0", *COMMON, "--max-length", "1024"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained rm for 2 steps") == 1, done.stdout
    assert done.stdout.count("held-out accuracy") == 1
    provenance = json.loads((out / "cai-train.json").read_text())
    assert provenance["processes"] == 2 and provenance["kind"] == "rm"
    heldout = reward_data([str(run)], heldout=0.5).heldout
    assert heldout is not None
    # gathered over both processes, each held-out pair counted once
    assert provenance["evaluation"]["heldout"]["pairs"] == len(heldout)  # type: ignore[index]
