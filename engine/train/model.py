"""The model of a run: which one (``default``, a folder, a hub id), loading it, and saving the trained one.

A run saves a plain Hugging Face model folder: a LoRA adapter is merged into
the weights (at the precision the base checkpoint is stored in, see
:func:`merge_lora`), and the tokenizer with its chat template is saved beside
them, so ``cai generate --model OUT`` and ``from_pretrained(OUT)`` need nothing
from this package.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.base import first_line
from engine.train.errors import TrainError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def resolve_model(spec: str) -> tuple[str, str]:
    """(what ``from_pretrained`` gets, the name recorded) for ``default``, a folder or a hub id.

    Raises:
        TrainError: The folder is missing or holds no model, or the default model is not installed.
    """
    from engine.backends.base import BackendError

    try:
        if spec == "default":
            from engine.backends.default_model import DEFAULT_MODEL_NAME, default_model_path

            return str(default_model_path()), DEFAULT_MODEL_NAME
        from engine.backends.base import locate_model

        source = locate_model(spec.removeprefix("hf:"))
    except BackendError as exc:
        raise TrainError(str(exc)) from None
    return source, spec.removeprefix("hf:")


def load_model(
    source: str, name: str, dtype: Any, *, reward_head: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (or, with ``reward_head``, the LM with a new scalar head) and its tokenizer for training.

    Raises:
        TrainError: Either cannot be loaded, or the tokenizer has no chat template.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise TrainError(f"{name}: cannot load the tokenizer: {first_line(exc)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise TrainError(f"{name}: the tokenizer has no chat template; cai datasets are chats: use a chat model")
    try:
        model = model_class(reward_head).from_pretrained(
            source, dtype=dtype, **({"num_labels": 1} if reward_head else {})
        )
    except Exception as exc:
        raise TrainError(f"{name}: cannot load the model: {first_line(exc)}") from None
    if reward_head and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token before padding
    return model, tokenizer


def model_class(reward_head: bool) -> Any:
    """transformers' auto class of a trained model: a causal LM, or a sequence classifier (a preference model)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if reward_head else AutoModelForCausalLM


def model_dtype(dtype: str, lora: bool) -> Any:
    """The torch dtype to load the model in for ``--dtype`` (``auto``, or a dtype name).

    Raises:
        TrainError: Not a dtype this machine can use.
    """
    import torch

    from engine.backends.torch_device import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype != "auto":
        try:
            return resolve_dtype(dtype, device)
        except Exception as exc:
            raise TrainError(str(exc)) from None
    # Full fine-tuning keeps fp32 master weights (bf16 runs as autocast); a frozen LoRA base can be bf16.
    return resolve_dtype("auto", device) if lora else torch.float32


def stored_dtype(source: str) -> Any:
    """The dtype a model's checkpoint declares (its ``config.json``), None when it says none or cannot be read."""
    import torch
    from transformers import AutoConfig

    try:
        dtype = AutoConfig.from_pretrained(source).dtype
    except Exception:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def merge_lora(model: Any) -> Any:
    """Merge a trained LoRA adapter into its base model, at the precision the base model is stored in.

    A frozen LoRA base may train in bf16 (where the hardware computes it
    natively) although its checkpoint holds fp32; merging into those weights
    would save every weight training never touched (embeddings, output head,
    norms) rounded to bf16. So when the base trained in another dtype than
    its checkpoint's, the base is loaded again at its own precision and the
    adapter is merged into that copy: the untouched weights are saved
    exactly as the base model holds them. That copy costs one more load of
    the base model (in CPU memory), once, at the end.
    """
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = model.active_adapter
    peft_config = model.peft_config[name]
    source = peft_config.base_model_name_or_path
    trained = next(
        (p.dtype for n, p in model.get_base_model().named_parameters() if "lora_" not in n and p.is_floating_point()),
        None,
    )
    stored = stored_dtype(source) if source else None
    if not source or (stored is not None and stored == trained):
        return model.merge_and_unload()
    state = {k: v.detach().to("cpu") for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
    try:
        reward_head = str(getattr(peft_config, "task_type", "")) in ("SEQ_CLS", "TaskType.SEQ_CLS")
        extra = {"num_labels": 1} if reward_head else {}
        base = model_class(reward_head).from_pretrained(source, dtype=stored if stored is not None else "auto", **extra)
    except Exception as exc:
        raise TrainError(
            f"{source}: cannot load the base model again to merge the adapter: {first_line(exc)}"
        ) from None
    fresh = get_peft_model(base, copy.deepcopy(peft_config), adapter_name=name)
    set_peft_model_state_dict(fresh, state, adapter_name=name)
    with torch.no_grad():
        return fresh.merge_and_unload()


def save_model(trainer: Any, out: Path) -> None:
    """Save a plain model folder (a LoRA adapter is merged into the weights, see :func:`merge_lora`) with its tokenizer.

    Every process calls this: under FSDP and ZeRO-3 ``trainer.save_model``
    gathers the sharded weights (a collective), and the main process writes.
    """
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model: whole weights on every process (sharding was refused)
        if accelerator.is_main_process:
            merged = merge_lora(model)
            merged.config.use_cache = True
            merged.save_pretrained(str(out))
            trainer.processing_class.save_pretrained(str(out))
    else:
        model.config.use_cache = True
        trainer.save_model(str(out))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (out / "training_args.bin").unlink(missing_ok=True)  # lives in the checkpoints; the model folder stays plain


__all__ = ["load_model", "merge_lora", "model_class", "model_dtype", "resolve_model", "save_model", "stored_dtype"]
