"""The model: the base weights + a LoRA adapter (new, or continued from
``initial_adapter_model_ckpt_path``), and the packed forward and backward.

Samples packed into one row never see each other: every sample's positions restart at 0,
and attention is block-diagonal — flash-attention's varlen kernel (``cu_seqlens``) when
flash-attn is installed on CUDA, PyTorch FlexAttention with a document mask on other CUDA
set-ups, and an explicit block-diagonal causal mask for SDPA on CPU (small contexts only:
it is O(L²) memory).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from template_forge.data.packing import IGNORE_INDEX
from template_forge.errors import ConfigError, Problem
from tforge_trainer.config import TrainConfig
from tforge_trainer.distributed import Dist
from tforge_trainer.packs import collate_packs
from tforge_trainer.weights import Weights


@dataclass(frozen=True)
class Forward:
    """How batches go through the model on this device.

    Examples:
        >>> choose_forward(torch.device("cpu"))
        Forward(attn='sdpa', device=device(type='cpu'), dtype=torch.float32, autocast=False, pad_multiple=1)
    """

    attn: str  # the attention backend (see attention_backend)
    device: torch.device
    dtype: torch.dtype  # of the frozen base weights (the LoRA weights train in float32)
    autocast: bool = False  # bf16 autocast around the forward
    pad_multiple: int = 1  # micro-batches are padded to a multiple of this many tokens


def choose_forward(device: torch.device) -> Forward:
    """The trainer's settings for ``device``: on CUDA a bf16 base (when supported) under bf16
    autocast, micro-batches padded to a multiple of 64; on CPU float32, no padding."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return Forward(attn=attention_backend(device), device=device, dtype=dtype, autocast=cuda,
                   pad_multiple=64 if cuda else 1)


def pad_token(model_config: dict) -> int:
    """The id batches are padded with: the model's ``pad_token_id`` if it has one inside the
    vocabulary, else 0 (padding is never trained, and attention never reaches it).

    Examples:
        >>> pad_token({"pad_token_id": 2, "vocab_size": 10}), pad_token({"pad_token_id": 10, "vocab_size": 10})
        (2, 0)
    """
    pad_id = int(model_config.get("pad_token_id") or 0)
    return 0 if pad_id >= int(model_config.get("vocab_size", pad_id + 1)) else pad_id


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


def load_base(weights: Weights, *, fwd: Forward):
    """The base weights as data only: safetensors, never the folder's own code (checked before,
    by :mod:`tforge_trainer.trust`; these flags are the second line)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(weights.base, dtype=fwd.dtype, attn_implementation=fwd.attn,
                                                    trust_remote_code=False, use_safetensors=True)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError([Problem(weights.base_label, "initial_base_model_ckpt_path", (
            f"transformers cannot load these weights ({first}). Point it at a complete save_pretrained folder "
            "(config.json + *.safetensors)."))]) from None


def load_model(config: TrainConfig, weights: Weights, *, fwd: Forward):
    """The PEFT model on ``fwd.device``: base weights (in ``fwd.dtype``) + a new or continued
    LoRA adapter, trainable parameters only."""
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: the trainer reports its own progress
    model = load_base(weights, fwd=fwd)
    model.to(fwd.device)
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
def _block_causal_mask(seq_lengths: list[torch.Tensor], device, dtype) -> torch.Tensor:
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


def forward_kwargs(batch: dict, fwd: Forward) -> dict:
    """Model inputs for one packed batch (tensors from :func:`template_forge.data.packing.collate`)."""
    attn, device = fwd.attn, fwd.device
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
        mask_dtype = torch.bool if attn == "sdpa" else fwd.dtype  # eager *adds* the mask: it must be 0/−inf
        kwargs["attention_mask"] = _block_causal_mask(per_row, device, mask_dtype)
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


def loss_sum(model, batch: dict, *, fwd: Forward) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's trained labels (not averaged: the
    caller divides by the number of trained tokens across all micro-batches of a step).

    Logits are computed only at the positions that predict a trained token (``logits_to_keep``):
    with a 128k vocabulary the full ``[B, L, V]`` logits dwarf the rest of a LoRA step, and in
    instruction tuning most positions are not trained.
    """
    kwargs = forward_kwargs(batch, fwd)
    labels = batch["labels"].to(fwd.device, non_blocking=True)
    if fwd.attn == "flash_attention_2":
        labels = labels.reshape(1, -1)  # the rows run as one flat varlen sequence
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    with torch.autocast(fwd.device.type, dtype=torch.bfloat16, enabled=fwd.autocast):
        logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # the softmax in float32
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[:, keep].flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")


# --------------------------------------------------------------------------- a step, an evaluation
def accumulate(ddp, micro: list[dict], *, dist: Dist, global_trained: float, fwd: Forward) -> float:
    """Backward over a step's micro-batches; returns this rank's summed token loss.

    Each micro-batch's summed loss is scaled by ``world / global_trained`` (the trained tokens
    of the whole step on every rank): DDP averages gradients over ranks, so × world makes that
    a sum, and ÷ all trained tokens makes the step's loss their mean. Gradients are synced
    across ranks once, on the last micro-batch.
    """
    step_loss = 0.0
    for k, batch in enumerate(micro):
        sync = (k == len(micro) - 1) or not dist.enabled
        with ddp.no_sync() if not sync else contextlib.nullcontext():
            loss = loss_sum(ddp, batch, fwd=fwd)
            (loss * dist.world / max(global_trained, 1)).backward()
        step_loss += float(loss.detach())
    return step_loss


def evaluate(model, ds, *, batch_size: int, dist: Dist, pad_id: int, fwd: Forward) -> tuple[float, int]:
    """Mean token loss over the whole validation set (each rank takes every world-th batch)."""
    model.eval()
    total, tokens = 0.0, 0
    order = np.arange(len(ds))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for b in batches[dist.rank::dist.world]:
            batch = collate_packs(ds, b, pad_id, fwd.pad_multiple)
            total += float(loss_sum(model, batch, fwd=fwd))
            tokens += int(batch["num_trained"])
    model.train()
    total, tokens = dist.sum([total, tokens])
    return (total / tokens if tokens else float("nan")), int(tokens)
