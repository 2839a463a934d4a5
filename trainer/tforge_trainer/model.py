"""Bring-your-own weights: the base model (checked against ``model_id``'s family), the LoRA
adapter (new, or continued from ``initial_adapter_model_ckpt_path``), and the packed forward.

Samples packed into one row never see each other: every sample's positions restart at 0,
and attention is block-diagonal — flash-attention's varlen kernel (``cu_seqlens``) when
flash-attn is installed on CUDA, PyTorch FlexAttention with a document mask on other CUDA
set-ups, and an explicit block-diagonal causal mask for SDPA on CPU (small contexts only:
it is O(L²) memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from template_forge.errors import ConfigError, DataError, Problem
from template_forge.io import read_json_object
from tforge_trainer.config import TrainConfig, family_of

IGNORE_INDEX = -100


@dataclass
class Weights:
    """Where the run's base weights, tokenizer and adapter come from (local folders)."""

    base: Path  # a save_pretrained folder (or the model_id itself when no path is given)
    base_label: str  # as the user wrote it (s3:// URL or path)
    adapter: Path | None
    adapter_label: str | None


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing. {what}")
    return read_json_object(path)


def check_family(config: TrainConfig, base: Path, label: str) -> dict:
    """The base folder's ``config.json``, checked against the family ``model_id`` names."""
    model_config = _read_json(base / "config.json", (
        f"initial_base_model_ckpt_path ({label}) must be a folder in save_pretrained layout "
        "(config.json, *.safetensors, tokenizer files)."))
    fam = family_of(config.model_id)
    if fam is None:
        return model_config
    found_type, found_vocab = model_config.get("model_type"), model_config.get("vocab_size")
    wrong_type = found_type not in fam.model_types
    wrong_vocab = fam.vocab_size is not None and found_vocab != fam.vocab_size
    if wrong_type or wrong_vocab:
        expected = f"model_type `{'` or `'.join(fam.model_types)}`" + (
            f", vocab_size {fam.vocab_size}" if fam.vocab_size else "")
        raise ConfigError([Problem(str(base / "config.json"), "initial_base_model_ckpt_path", (
            f"these weights are model_type `{found_type}` with vocab_size {found_vocab}, but model_id "
            f"`{config.model_id}` names the {fam.name} family ({expected}). Point initial_base_model_ckpt_path "
            f"at {fam.name} weights, or set model_id to the model these weights were trained from."))])
    return model_config


def load_tokenizer(base: Path, label: str):
    """The tokenizer saved beside the base weights (``tokenizer.json``)."""
    path = base / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{label}: no tokenizer.json beside the weights. Save the tokenizer into the same folder "
                        "(tokenizer.save_pretrained(folder)), or convert one with `tforge convert-tokenizer`.")
    return path


def check_adapter(config: TrainConfig, adapter: Path, label: str, warn) -> dict:
    """The adapter's ``adapter_config.json``, checked against the run's ``lora_config``."""
    cfg = _read_json(adapter / "adapter_config.json", (
        f"initial_adapter_model_ckpt_path ({label}) must be a PEFT adapter folder "
        "(adapter_config.json + adapter_model.safetensors)."))
    where = str(adapter / "adapter_config.json")
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(Problem(where, "peft_type", f"is {cfg.get('peft_type')}; only LoRA adapters continue here."))
    given = config.lora_config
    r = cfg.get("r")
    if r != given.get("r"):
        problems.append(Problem(where, "r", (
            f"the adapter has rank {r}, lora_config.r is {given.get('r')}. A continued adapter keeps its rank: "
            f"set lora_config.r={r} (or drop initial_adapter_model_ckpt_path to start a new adapter).")))
    theirs, ours = cfg.get("target_modules"), given.get("target_modules")
    if theirs is not None and ours is not None and _modules(theirs) != _modules(ours):
        problems.append(Problem(where, "target_modules", (
            f"the adapter targets {sorted(_modules(theirs))}, lora_config.target_modules is {sorted(_modules(ours))}. "
            f"Set lora_config.target_modules to the adapter's.")))
    if problems:
        raise ConfigError(problems)
    base_name = cfg.get("base_model_name_or_path")
    if base_name and base_name not in (config.model_id, config.initial_base_model_ckpt_path):
        warn(f"{where}: the adapter was trained on `{base_name}`, this run's model is `{config.model_id}`"
             + (f" with weights from {config.initial_base_model_ckpt_path}" if config.initial_base_model_ckpt_path
                else "") + ". Continuing: its shapes are checked when it loads.")
    return cfg


def _modules(value) -> set:
    return {value} if isinstance(value, str) else set(value)


def attention_backend(device: torch.device) -> str:
    """``flash_attention_2`` (varlen) with flash-attn on CUDA, else ``flex_attention`` on CUDA,
    else ``sdpa`` with an explicit block-diagonal mask."""
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            return "flex_attention"
    return "sdpa"


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant, so inputs of a
    frozen base still carry gradients to the LoRA weights). transformers ≥ 5.x names it
    ``activation_checkpointing_enable``; older versions ``gradient_checkpointing_enable``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def load_model(config: TrainConfig, weights: Weights, *, device: torch.device, dtype: torch.dtype,
               attn: str, warn=print):
    """The PEFT model: base weights + a new or continued LoRA adapter, trainable parameters only."""
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: the trainer reports its own progress
    model = AutoModelForCausalLM.from_pretrained(weights.base, dtype=dtype, attn_implementation=attn)
    model.to(device)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if weights.adapter is not None:
        try:
            model = PeftModel.from_pretrained(model, weights.adapter, is_trainable=True)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError([Problem(weights.adapter_label or str(weights.adapter),
                                       "initial_adapter_model_ckpt_path", (
                f"the adapter does not fit the base weights ({str(exc).splitlines()[0][:300]}). "
                "It was trained on another architecture or size; point it at an adapter of this base model."))]
            ) from None
    else:
        lora = dict(config.lora_config)
        lora.setdefault("task_type", "CAUSAL_LM")
        try:
            model = get_peft_model(model, LoraConfig(**lora))
        except ValueError as exc:
            raise ConfigError([Problem(config.source, "lora_config", (
                f"{exc}. Check lora_config.target_modules against the model's module names "
                "(e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj for Llama).").replace("..", "."))]
            ) from None
    return model


# --------------------------------------------------------------------------- the packed forward
def _block_causal_mask(seq_lengths: list[torch.Tensor], length: int, device, dtype) -> torch.Tensor:
    """``[B, 1, L, L]``: True where query i may attend key j (same sample, j ≤ i)."""
    rows = []
    for lens in seq_lengths:
        doc = torch.repeat_interleave(torch.arange(len(lens), device=device), lens.to(device))
        same = doc[:, None] == doc[None, :]
        rows.append(same.tril())
    mask = torch.stack(rows)[:, None]
    if dtype == torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)


def _doc_block_mask(seq_lengths: list[torch.Tensor], length: int, device):
    from torch.nn.attention.flex_attention import create_block_mask

    doc = torch.stack([torch.repeat_interleave(torch.arange(len(s), device=device), s.to(device))
                       for s in seq_lengths])

    def doc_causal(b, h, q, k):
        return (doc[b, q] == doc[b, k]) & (k <= q)

    return create_block_mask(doc_causal, B=doc.shape[0], H=None, Q_LEN=length, KV_LEN=length, device=device)


def forward_kwargs(batch: dict, attn: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Model inputs for one packed batch (tensors from :func:`template_forge.data.packing.collate`)."""
    ids = batch["input_ids"].to(device, non_blocking=True)
    pos = batch["position_ids"].to(device, non_blocking=True)
    length = ids.shape[1]
    kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": pos}
    per_row = _rows(batch)
    if attn == "flash_attention_2":
        # One flat varlen batch: the rows are concatenated, cu_seqlens spans them all.
        cu = batch["cu_seqlens"].to(device=device, dtype=torch.int32)
        kwargs = {"input_ids": ids.reshape(1, -1), "position_ids": pos.reshape(1, -1),
                  "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                  "max_length_q": int(batch["seq_lengths"].max()), "max_length_k": int(batch["seq_lengths"].max())}
    elif attn == "flex_attention":
        kwargs["attention_mask"] = _doc_block_mask(per_row, length, device)
    else:
        mask_dtype = torch.bool if attn == "sdpa" else dtype  # eager *adds* the mask: it must be 0/−inf
        kwargs["attention_mask"] = _block_causal_mask(per_row, length, device, mask_dtype)
    return kwargs


def _rows(batch: dict) -> list[torch.Tensor]:
    """Each row's segment lengths, from the flat ``seq_lengths`` and per-row ``num_samples``
    (+1 for a padding segment where the row is short)."""
    flat, counts = batch["seq_lengths"], batch["num_samples"].tolist()
    length, out, i = batch["input_ids"].shape[1], [], 0
    for n in counts:
        seg = flat[i:i + n]
        if int(seg.sum()) < length:
            seg = flat[i:i + n + 1]
            n += 1
        out.append(seg.long())
        i += n
    return out


def loss_sum(model, batch: dict, *, attn: str, device: torch.device, dtype: torch.dtype,
             autocast: bool) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's trained labels (not averaged: the
    caller divides by the number of trained tokens across all micro-batches of a step).

    Logits are computed only at the positions that predict a trained token (``logits_to_keep``):
    with a 128k vocabulary the full ``[B, L, V]`` logits dwarf the rest of a LoRA step, and in
    instruction tuning most positions are not trained.
    """
    kwargs = forward_kwargs(batch, attn, device, dtype)
    labels = batch["labels"].to(device, non_blocking=True)
    if attn == "flash_attention_2":
        labels = labels.reshape(1, -1)  # the rows run as one flat varlen sequence
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # the softmax in float32
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[:, keep].flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
