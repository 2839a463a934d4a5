"""The training loop: plain torch + peft, read top to bottom.

One optimizer step = ``gradient_accumulation_steps`` micro-batches per rank. The loss of a
step is the sum of token losses over every trained token of all its micro-batches on all
ranks, divided by that number of tokens — so a micro-batch with many trained tokens weighs
more than one with few, exactly as if the whole step were one batch. (Averaging per
micro-batch, then over micro-batches, would not be.)

Run it with ``tforge train CONFIG.yaml``; under ``torchrun --nproc_per_node N`` it is
data-parallel (DDP; NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from template_forge.errors import ConfigError, Problem
from tforge_trainer import checkpoint as ckpt
from tforge_trainer.config import TrainConfig, load_format
from tforge_trainer.model import (
    Weights,
    attention_backend,
    check_adapter,
    check_family,
    load_model,
    load_tokenizer,
    loss_sum,
)
from tforge_trainer.packs import Schedule, prepare
from tforge_trainer.remote import is_remote

RESOLVED_CONFIG = "tforge_config.yaml"
METRICS = "metrics.jsonl"
# Keys that may change between a run and its --resume without changing what is trained.
RESUMABLE_CHANGES = {"output_dir", "max_num_checkpoints", "storage_options", "valid_path",
                     "eval_batch_size_per_device", "checkpoint_and_evaluation_frequency"}


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def first(self, fn, *, per_node: bool = False):
        """``fn(True)`` on rank 0 (local rank 0 of each node with ``per_node``), then, once it is
        done, ``fn(False)`` on the others: for work whose result the others reuse (downloads,
        data preparation)."""
        leader = (self.local_rank if per_node else self.rank) == 0
        result = fn(True) if leader else None
        self.barrier()
        return result if leader else fn(False)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_device(self) if _nccl() else "cpu")
        torch.distributed.all_reduce(t)
        return t.tolist()


def _nccl() -> bool:
    return torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"


def _device(dist: Dist) -> torch.device:
    return torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed() -> Dist:
    """DDP when started by torchrun (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local, enabled=True)


def cache_dir() -> Path:
    """Where ``s3://`` weights are downloaded: ``$TFORGE_CACHE_DIR`` or ``~/.cache/tforge``."""
    return Path(os.environ.get("TFORGE_CACHE_DIR", Path.home() / ".cache" / "tforge"))


def fetch_path(path: str, what: str, config: TrainConfig, dist: Dist, *, progress: bool) -> Path:
    """A local path for ``path`` (an ``s3://`` one downloaded once per node, by local rank 0,
    into the cache, while the other ranks wait)."""
    from tforge_trainer.remote import fetch

    options = config.storage_options or None
    return dist.first(lambda first: fetch(path, cache_dir=cache_dir(), what=what, progress=progress and first,
                                          storage_options=options), per_node=True)


def fetch_weights(config: TrainConfig, dist: Dist, *, progress: bool) -> Weights:
    """Local folders for the base weights and the adapter."""
    def get(path: str, what: str) -> Path:
        return fetch_path(path, what, config, dist, progress=progress)

    base_label = config.initial_base_model_ckpt_path or config.model_id
    if config.initial_base_model_ckpt_path:
        base = get(config.initial_base_model_ckpt_path, "initial_base_model_ckpt_path")
    else:
        base = Path(config.model_id)
        if not base.is_dir():
            raise ConfigError([Problem(config.source, "initial_base_model_ckpt_path", (
                f"not given, and model_id `{config.model_id}` is not a local folder. Point "
                "initial_base_model_ckpt_path at your weights (a save_pretrained folder or s3://bucket/prefix); "
                "tforge never downloads from a model hub."))])
    adapter = None
    if config.initial_adapter_model_ckpt_path:
        adapter = get(config.initial_adapter_model_ckpt_path, "initial_adapter_model_ckpt_path")
    return Weights(base=base, base_label=base_label, adapter=adapter,
                   adapter_label=config.initial_adapter_model_ckpt_path)


def lr_lambda(warmup: int, total: int, kind: str):
    """Linear warmup over ``warmup`` steps, then cosine or linear decay to 0 at ``total``.

    Examples:
        >>> f = lr_lambda(2, 10, "linear")
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    def f(step: int) -> float:  # ``step`` optimizer steps done; the lr of step ``step + 1``
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
    return f


def _fingerprint(resolved: dict) -> dict:
    return {k: v for k, v in resolved.items() if k not in RESUMABLE_CHANGES}


def collate_packs(ds, indices: np.ndarray, pad_id: int, multiple: int) -> dict:
    """Packs ``indices`` of ``ds`` as a torch batch, padded to a multiple of ``multiple``."""
    from template_forge.data.packing import collate

    packs = [ds[int(i)] for i in indices]
    length = max(len(p.input_ids) for p in packs)
    length = -(-length // multiple) * multiple
    arrays = collate(packs, length=length, pad_id=pad_id)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
             for k, v in arrays.items()}
    batch["num_tokens"] = sum(len(p.input_ids) for p in packs)  # without padding
    return batch


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop the lines a killed run wrote after the checkpoint (``step``) it resumes from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


class Metrics:
    """``metrics.jsonl``: one line per optimizer step, one per evaluation."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        if self.enabled:
            truncate_jsonl(self.path, step)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def accumulate(ddp, micro: list[dict], *, dist: Dist, global_trained: float, attn: str, device, dtype,
               autocast: bool) -> float:
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
            loss = loss_sum(ddp, batch, attn=attn, device=device, dtype=dtype, autocast=autocast)
            (loss * dist.world / max(global_trained, 1)).backward()
        step_loss += float(loss.detach())
    return step_loss


def evaluate(model, ds, *, batch_size: int, dist: Dist, pad_id: int, attn: str, device, dtype, autocast,
             multiple: int) -> tuple[float, int]:
    """Mean token loss over the whole validation set (each rank takes every world-th batch)."""
    model.eval()
    total, tokens = 0.0, 0
    order = np.arange(len(ds))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for b in batches[dist.rank::dist.world]:
            batch = collate_packs(ds, b, pad_id, multiple)
            total += float(loss_sum(model, batch, attn=attn, device=device, dtype=dtype, autocast=autocast))
            tokens += int(batch["num_trained"])
    model.train()
    total, tokens = dist.sum([total, tokens])
    return (total / tokens if tokens else float("nan")), int(tokens)


def train(config: TrainConfig, *, resume: bool = False, stop_at_step: int | None = None, progress: bool = True,
          log=None) -> Path:
    """Train a LoRA adapter as ``config`` says; returns the output folder."""
    dist = init_distributed()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = log if dist.main else (lambda msg: None)
    show = progress and dist.main and sys.stderr.isatty()
    device = _device(dist)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    out = Path(config.output_dir)
    resolved = config.resolved()

    # ---- where we start: a fresh output folder, or the latest checkpoint of this run
    last = ckpt.latest(out)
    if last is not None and not resume:
        raise ConfigError([Problem(config.source, "output_dir", (
            f"{out} already holds a run (checkpoint {last.name}). Pass --resume to continue it, "
            "or choose another output_dir."))])
    if resume and last is not None:
        before = ckpt.read_state(last)["config"]
        changed = sorted(k for k in set(_fingerprint(before)) | set(_fingerprint(resolved))
                         if before.get(k) != resolved.get(k))
        if changed:
            raise ConfigError([Problem(config.source, ", ".join(changed), (
                f"differs from the run in {out} ({last.name}), so --resume cannot continue it exactly. "
                "Restore those values, or start a new run in another output_dir."))])
    if resume and last is None:
        say(f"--resume: no checkpoint in {out}; starting from step 0.")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_partials(out)
        _write_resolved(out / RESOLVED_CONFIG, resolved)

    # ---- weights, tokenizer, format, data
    weights = fetch_weights(config, dist, progress=show)
    model_config = check_family(config, weights.base, weights.base_label)
    tokenizer_path = load_tokenizer(weights.base, weights.base_label)
    if weights.adapter is not None:
        check_adapter(config, weights.adapter, weights.adapter_label, say)
    spec = load_format(config)
    from template_forge.tokens.vocab import cached_vocab

    vocab = cached_vocab(str(tokenizer_path))
    tokens = vocab.tok.get_vocab_size(with_added_tokens=True)
    if tokens > model_config.get("vocab_size", math.inf):
        raise ConfigError([Problem(str(tokenizer_path), "tokenizer", (
            f"has {tokens} tokens, the model's vocab_size is "
            f"{model_config.get('vocab_size')}: ids past the embedding would crash training. Use the model's own "
            "tokenizer."))])
    context_length = config.context_length or int(model_config.get("max_position_embeddings", 2048))
    data_dir = out / "data"
    datasets = {}
    for name, path in (("train", config.train_path), ("valid", config.valid_path)):
        if path is None:
            continue
        if is_remote(path):  # s3:// data: fetched into the cache like the weights
            path = str(fetch_path(path, f"{name}_path", config, dist, progress=show))
        datasets[name] = dist.first(lambda first, name=name, path=path: prepare(
            path, name=name, spec=spec, tokenizer=tokenizer_path, tokenizer_sha256=vocab.sha256, out_root=data_dir,
            context_length=context_length, policy=config.policy, seed=config.seed, log=say, progress=show and first))
    train_ds, valid_ds = datasets["train"], datasets.get("valid")
    if len(train_ds) == 0:
        raise ConfigError([Problem(config.source, "train_path", (
            f"{config.train_path}: no trainable packs (every conversation dropped?). Check `tforge stats {data_dir / 'train'}`."))])
    schedule = Schedule(num_packs=len(train_ds), batch_size=config.train_batch_size_per_device,
                        accumulation=config.gradient_accumulation_steps, world=dist.world, seed=config.seed,
                        num_epochs=config.num_epochs, min_update_steps=config.min_update_steps)
    total = schedule.total_steps
    if len(train_ds) < schedule.global_batch:
        say(f"warning: {len(train_ds)} packs, fewer than one step's {schedule.global_batch} "
            f"(batch × accumulation × devices): packs repeat within a step.")
    freq = config.checkpoint_and_evaluation_frequency
    every = freq.frequency * (schedule.steps_per_epoch if freq.unit == "epochs" else 1)

    # ---- model, optimizer, schedule
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    attn = attention_backend(device)
    model = load_model(config, weights, device=device, dtype=torch.float32 if not cuda else dtype, attn=attn,
                       warn=say)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        for p in params:  # LoRA weights train in float32; the frozen base stays bf16
            p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.num_warmup_steps, total, config.lr_scheduler_type))
    pad_id = int(model_config.get("pad_token_id") or 0)
    if pad_id >= int(model_config.get("vocab_size", pad_id + 1)):
        pad_id = 0
    multiple = 64 if cuda else 1
    ddp = model
    if dist.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if cuda else None,
                                                        broadcast_buffers=False)
    autocast = cuda

    step, trained_so_far = 0, 0
    metrics = Metrics(out / METRICS, dist.main)
    if resume and last is not None:
        state = ckpt.restore(last, model=model, optimizer=optimizer, scheduler=scheduler, rank=dist.rank,
                             device=device)
        step, trained_so_far = state["step"], state["trained_tokens"]
        metrics.truncate_after(step)
        say(f"resumed from {last} (step {step} of {total}, epoch {schedule.epoch_of(step):.2f})")
    elif dist.main and (out / METRICS).exists():
        (out / METRICS).unlink()
    dist.barrier()

    trainable = sum(p.numel() for p in params)
    say(f"training {config.model_id} ({weights.base_label}) with LoRA r={model.peft_config['default'].r}: "
        f"{trainable:,} trainable parameters; {len(train_ds)} packs, {schedule.steps_per_epoch} steps/epoch, "
        f"{total} steps, {dist.world} process(es), attention {attn}, device {device}")
    end = total if stop_at_step is None else min(total, stop_at_step)

    from tqdm.auto import tqdm

    rank_log = None
    if dist.enabled:  # which packs each rank trained on: ranks must never share one
        truncate_jsonl(out / f"data-rank{dist.rank}.jsonl", step)
        rank_log = open(out / f"data-rank{dist.rank}.jsonl", "a" if step else "w", encoding="utf-8", buffering=1)
    width = shutil.get_terminal_size((100, 20)).columns or 100  # 0 in some pseudo-terminals
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not show, ncols=min(width, 140))
    while step < end:
        t0 = time.perf_counter()
        indices = schedule.micro_batches(step, dist.rank)
        micro = [collate_packs(train_ds, idx, pad_id, multiple) for idx in indices]
        if rank_log is not None:
            rank_log.write(json.dumps({"step": step + 1, "packs": [i.tolist() for i in indices]}) + "\n")
        global_trained, global_tokens = dist.sum([sum(int(b["num_trained"]) for b in micro),
                                                  sum(b["num_tokens"] for b in micro)])
        step_loss = accumulate(ddp, micro, dist=dist, global_trained=global_trained, attn=attn, device=device,
                               dtype=dtype, autocast=autocast)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        trained_so_far += int(global_trained)
        (summed,) = dist.sum([step_loss])
        seconds = time.perf_counter() - t0
        record = {"step": step, "epoch": round(schedule.epoch_of(step), 4), "loss": summed / max(global_trained, 1),
                  "lr": lr, "grad_norm": grad_norm, "trained_tokens": int(global_trained),
                  "tokens": int(global_tokens), "tokens_per_s": global_tokens / seconds,
                  "total_trained_tokens": trained_so_far}
        metrics.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
        if step % every == 0 or step == end:
            eval_record = None
            if valid_ds is not None and len(valid_ds):
                # the bare model: ranks run different numbers of eval batches, and DDP's forward
                # would wait for the others at every call
                eval_loss, eval_tokens = evaluate(model, valid_ds, batch_size=config.eval_batch_size_per_device,
                                                  dist=dist, pad_id=pad_id, attn=attn, device=device, dtype=dtype,
                                                  autocast=autocast, multiple=multiple)
                eval_record = {"step": step, "epoch": record["epoch"], "eval_loss": eval_loss,
                               "eval_tokens": eval_tokens}
                metrics.write(eval_record)
            where = _save(out, step, dist=dist, model=model, optimizer=optimizer, scheduler=scheduler,
                          keep=config.max_num_checkpoints,
                          state={"step": step, "epoch": schedule.epoch_of(step), "total_steps": total,
                                 "trained_tokens": trained_so_far, "config": resolved,
                                 # where the data order stands: the next step's epoch and place in it
                                 "data": {"num_packs": len(train_ds), "steps_per_epoch": schedule.steps_per_epoch,
                                          "epoch": step // schedule.steps_per_epoch,
                                          "step_in_epoch": step % schedule.steps_per_epoch}})
            msg = f"step {step}/{total}: loss {record['loss']:.4f}"
            if eval_record:
                msg += f", eval loss {eval_record['eval_loss']:.4f}"
            (bar.write if show else say)(f"{msg}; checkpoint {where.name}" if dist.main else msg)
    bar.close()
    if rank_log is not None:
        rank_log.close()
    if step < total:
        say(f"stopped at step {step} of {total} (--stop-at-step); continue with --resume.")
        _finish(dist)
        return out
    if dist.main:
        _final_output(out, model=model, config=config, spec=spec, base=weights.base)
        say(f"done: adapter and tokenizer (chat template `{spec.name or 'custom'}`) in {out}")
    _record_adapter_digest(out, model, dist)
    _finish(dist)
    return out


def _save(out: Path, step: int, *, dist: Dist, model, optimizer, scheduler, keep: int, state: dict) -> Path:
    tmp = ckpt.partial(out, step)
    if dist.main:
        ckpt.begin(out, step)
    dist.barrier()
    ckpt.write_rng(tmp, dist.rank)
    dist.barrier()
    if dist.main:
        ckpt.write_main(tmp, model=model, optimizer=optimizer, scheduler=scheduler, state=state)
        ckpt.commit(out, step, keep=keep)
    dist.barrier()
    return ckpt.folder(out) / ckpt.name(step)


def _write_resolved(path: Path, resolved: dict) -> None:
    import yaml

    from template_forge.io import write_atomic

    write_atomic(path, "# the config this run used, every default filled in (written by tforge train)\n"
                 + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def _final_output(out: Path, *, model, config: TrainConfig, spec, base: Path) -> None:
    """The adapter + the tokenizer serving the trained format, moved into ``out`` file by file
    once all of them are written."""
    from transformers import AutoTokenizer

    from template_forge.format.compiler import compile_template
    from template_forge.io import install_chat_template

    tmp = out / ".final.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # name the base as the user did (an s3:// URL, a path), not the local cache folder
    ckpt.save_adapter(model, tmp, base_name=config.initial_base_model_ckpt_path or config.model_id)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    install_chat_template(tmp, compile_template(spec))
    ckpt.fsync_tree(tmp)
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            os.replace(f, out / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _record_adapter_digest(out: Path, model, dist: Dist) -> None:
    """Each rank's final adapter digest, in ``ranks.json`` (they must agree under DDP)."""
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    digest = h.hexdigest()
    if dist.enabled:
        gathered = [None] * dist.world
        torch.distributed.all_gather_object(gathered, digest)
    else:
        gathered = [digest]
    if dist.main:
        (out / "ranks.json").write_text(json.dumps({"world_size": dist.world, "adapter_sha256": gathered}) + "\n",
                                        encoding="utf-8")


def _finish(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
