"""The training recipe: plain torch + peft, a page of named phases read top to bottom.

:func:`train` starts (or resumes) a run, loads the weights and the format, prepares the
data, builds the model and optimizer, restores the checkpoint it resumes from, trains, and
writes the adapter. Each phase is a plain function; what one hands on to the next is a
small frozen record (:class:`Start`, :class:`Inputs`, :class:`Data`, :class:`Run`,
:class:`Position`).

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
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from template_forge.errors import ConfigError, Problem
from template_forge.locks import output_lock
from tforge_trainer import checkpoint as ckpt
from tforge_trainer.checkpoint_verify import choose
from tforge_trainer.config import RESOLVED_CONFIG, TrainConfig, changed_keys, load_format, write_resolved
from tforge_trainer.distributed import Dist, device_of, finish, init_distributed
from tforge_trainer.metrics import METRICS, Metrics, pack_log
from tforge_trainer.model import Forward, accumulate, choose_forward, evaluate, load_model, pad_token
from tforge_trainer.packs import Schedule, collate_packs, prepare
from tforge_trainer.remote import is_remote
from tforge_trainer.trust import check_trusted
from tforge_trainer.weights import (
    Weights,
    check_adapter,
    check_family,
    check_vocab,
    fetch_path,
    fetch_weights,
    load_tokenizer,
    tokenizer_file,
)

if TYPE_CHECKING:
    from template_forge.data.packed import PackedDataset
    from template_forge.format.spec import Spec

Say = Callable[[str], None]


def train(config: TrainConfig, *, resume: bool = False, stop_at_step: int | None = None, progress: bool = True,
          log: Say | None = None, warnings: list[str] | tuple[str, ...] = ()) -> Path:
    """Train a LoRA adapter as ``config`` says; returns the output folder.

    ``warnings`` (from :func:`~tforge_trainer.config.load_config`) are printed first, by rank 0.
    """
    dist = init_distributed()
    say, show = _say_and_show(dist, log=log, progress=progress)
    for warning in warnings:
        say(f"warning: {warning}")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    # One run per output_dir: a second `tforge train` (or --resume) into it is refused while
    # this one lives. Rank 0 alone writes the folder, so rank 0 alone holds the lock.
    with output_lock(config.output_dir) if dist.main else contextlib.nullcontext():
        return _train(config, dist=dist, say=say, show=show, resume=resume, stop_at_step=stop_at_step)


def _train(config: TrainConfig, *, dist: Dist, say: Say, show: bool, resume: bool, stop_at_step: int | None) -> Path:
    start = start_or_resume(config, resume=resume, dist=dist, say=say)
    inputs = load_weights_and_format(config, dist=dist, say=say, show=show)
    data = load_data(config, inputs, out=start.out, dist=dist, say=say, show=show)
    run = build_run(config, inputs, total_steps=data.schedule.total_steps, dist=dist)
    at = restore(start, run, data=data, dist=dist, say=say)
    say(describe(config, inputs, data=data, run=run, dist=dist))
    total = data.schedule.total_steps
    end = total if stop_at_step is None else min(total, stop_at_step)
    at = train_steps(config, start, data=data, run=run, at=at, end=end, dist=dist, say=say, show=show)

    if at.step < total:
        say(f"stopped at step {at.step} of {total} (--stop-at-step); continue with --resume.")
    else:
        final_output(config, inputs, run=run, out=start.out, dist=dist, say=say)
    finish(dist)
    return start.out


def _say_and_show(dist: Dist, *, log: Say | None, progress: bool) -> tuple[Say, bool]:
    """What rank 0 says (the others say nothing), and whether it draws progress bars."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = log if dist.main else (lambda msg: None)
    return say, progress and dist.main and sys.stderr.isatty()


# --------------------------------------------------------------------------- start or resume
@dataclass(frozen=True)
class Start:
    """Where the run lives, and where it starts."""

    out: Path  # output_dir
    resolved: dict  # the config, every default filled in (also in every checkpoint's state.json)
    last: Path | None  # the checkpoint --resume continues from; None: step 0


def start_or_resume(config: TrainConfig, *, resume: bool, dist: Dist, say: Say) -> Start:
    """A fresh output folder, or the latest whole checkpoint of this same run (with --resume)."""
    out, resolved = Path(config.output_dir), config.resolved()
    found = ckpt.listing(out)
    if found and not resume:
        raise ConfigError([Problem(config.source, "output_dir", (
            f"{out} already holds a run (checkpoint {found[-1].name}). Pass --resume to continue it, "
            "or choose another output_dir."))])
    last = choose_checkpoint(config, found, out=out, dist=dist, say=say) if found else None
    if last is None and resume:
        say(f"--resume: no checkpoint in {out}; starting from step 0.")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_partials(out)
        write_resolved(out / RESOLVED_CONFIG, resolved)
    return Start(out=out, resolved=resolved, last=last)


def choose_checkpoint(config: TrainConfig, found: list[Path], *, out: Path, dist: Dist, say: Say) -> Path:
    """The newest checkpoint that passes verification; the damaged ones newer than it are
    reported and set aside. Refused: none is whole, or it is of another run (config, world size)."""
    choice = choose(found)
    where = out / "checkpoints"
    if choice.chosen is None:
        raise ConfigError([Problem(str(p), "--resume", f"damaged: {problem}.") for p, problem in choice.damaged]
                          + [Problem(config.source, "--resume", (
                              f"no whole checkpoint is left in {where} ({len(found)} found, every one damaged), "
                              "so there is nothing to resume from. Start the run again without --resume in "
                              f"another output_dir (or remove {where} to reuse this one)."))])
    for path, problem in choice.damaged:
        say(f"warning: checkpoint {path} is damaged ({problem}): skipped, kept as .{path.name}.damaged; "
            f"resuming from {choice.chosen.name}.")
    state = ckpt.read_state(choice.chosen)
    changed = changed_keys(state["config"], config.resolved())
    if changed:
        raise ConfigError([Problem(config.source, ", ".join(changed), (
            f"differs from the run in {out} ({choice.chosen.name}), so --resume cannot continue it exactly. "
            "Restore those values, or start a new run in another output_dir."))])
    if state["world_size"] != dist.world:
        raise ConfigError([Problem(str(choice.chosen), "--resume", (
            f"the run was made by {state['world_size']} process(es), this one has {dist.world}: the data order "
            f"and RNG states are per rank. Resume with torchrun --nproc_per_node {state['world_size']}."))])
    dist.barrier()  # every rank has verified before rank 0 renames anything
    if dist.main:
        for path, _ in choice.damaged:
            ckpt.set_aside(path)
    return choice.chosen


# --------------------------------------------------------------------------- weights and format
@dataclass(frozen=True)
class Inputs:
    """What the run trains from: the weights, their config and tokenizer, the format."""

    weights: Weights
    model_config: dict  # the base weights' config.json
    tokenizer: Path  # tokenizer.json beside the base weights
    tokenizer_sha256: str
    spec: Spec
    context_length: int
    hf_tokenizer: Any  # the base tokenizer, loaded before the first step; saved with the adapter at the end
    chat_template: str  # the format compiled, served by the final tokenizer


def load_weights_and_format(config: TrainConfig, *, dist: Dist, say: Say, show: bool) -> Inputs:
    """Fetch the weights, check them against the config (and that loading them runs no code),
    read the tokenizer and the format: everything the end of the run needs, before its start."""
    from template_forge.format.compiler import compile_template
    from template_forge.tokens.vocab import cached_vocab

    weights = fetch_weights(config, dist, progress=show)
    check_trusted(weights.base, field="initial_base_model_ckpt_path", label=weights.base_label,
                  weights="*.safetensors")
    if weights.adapter is not None:
        check_trusted(weights.adapter, field="initial_adapter_model_ckpt_path", label=weights.adapter_label,
                      weights="adapter_model.safetensors")
    model_config = check_family(config, weights.base, weights.base_label)
    tokenizer = tokenizer_file(weights.base, weights.base_label)
    if weights.adapter is not None:
        check_adapter(config, weights.adapter, weights.adapter_label, say)
    spec = load_format(config)
    chat_template = compile_template(spec)
    hf_tokenizer = load_tokenizer(weights.base, weights.base_label)
    vocab = cached_vocab(str(tokenizer))
    check_vocab(tokenizer, vocab.tok.get_vocab_size(with_added_tokens=True), model_config)
    context_length = config.context_length or int(model_config.get("max_position_embeddings", 2048))
    return Inputs(weights=weights, model_config=model_config, tokenizer=tokenizer, tokenizer_sha256=vocab.sha256,
                  spec=spec, context_length=context_length, hf_tokenizer=hf_tokenizer, chat_template=chat_template)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """The packed datasets and the order they are trained in."""

    train: PackedDataset
    valid: PackedDataset | None
    schedule: Schedule
    every: int  # evaluate and checkpoint every this many optimizer steps


def load_data(config: TrainConfig, inputs: Inputs, *, out: Path, dist: Dist, say: Say, show: bool) -> Data:
    """Packed shards of train_path and valid_path (prepared into ``out/data`` from JSONL), and the schedule."""
    def packed(name: str, path: str):
        if is_remote(path):  # s3:// data: fetched into the cache like the weights
            path = str(fetch_path(path, f"{name}_path", config, dist, progress=show))
        return dist.first(lambda first: prepare(
            path, name=name, spec=inputs.spec, tokenizer=inputs.tokenizer, tokenizer_sha256=inputs.tokenizer_sha256,
            out_root=out / "data", context_length=inputs.context_length, policy=config.policy, seed=config.seed,
            log=say, progress=show and first))

    train_ds = packed("train", config.train_path)
    valid_ds = packed("valid", config.valid_path) if config.valid_path is not None else None
    if len(train_ds) == 0:
        raise ConfigError([Problem(config.source, "train_path", (
            f"{config.train_path}: no trainable packs (every conversation dropped?). "
            f"Check `tforge stats {out / 'data' / 'train'}`."))])
    schedule = Schedule(num_packs=len(train_ds), batch_size=config.train_batch_size_per_device,
                        accumulation=config.gradient_accumulation_steps, world=dist.world, seed=config.seed,
                        num_epochs=config.num_epochs, min_update_steps=config.min_update_steps)
    if len(train_ds) < schedule.global_batch:
        say(f"warning: {len(train_ds)} packs, fewer than one step's {schedule.global_batch} "
            f"(batch × accumulation × devices): packs repeat within a step.")
    freq = config.checkpoint_and_evaluation_frequency
    every = freq.frequency * (schedule.steps_per_epoch if freq.unit == "epochs" else 1)
    return Data(train=train_ds, valid=valid_ds, schedule=schedule, every=every)


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Run:
    """The model and what trains it."""

    model: Any  # the PEFT model
    ddp: Any  # the model wrapped in DistributedDataParallel under torchrun, else the model itself
    params: list  # the trainable (LoRA) parameters
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    fwd: Forward
    pad_id: int


def build_run(config: TrainConfig, inputs: Inputs, *, total_steps: int, dist: Dist) -> Run:
    """The PEFT model on this rank's device, AdamW over its LoRA weights, the lr schedule, DDP."""
    fwd = choose_forward(device_of(dist))
    cuda = fwd.device.type == "cuda"
    model = load_model(config, inputs.weights, fwd=fwd)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        for p in params:  # LoRA weights train in float32; the frozen base stays bf16
            p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.num_warmup_steps, total_steps, config.lr_scheduler_type))
    ddp = model
    if dist.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if cuda else None,
                                                        broadcast_buffers=False)
    return Run(model=model, ddp=ddp, params=params, optimizer=optimizer, scheduler=scheduler, fwd=fwd,
               pad_id=pad_token(inputs.model_config))


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


def describe(config: TrainConfig, inputs: Inputs, *, data: Data, run: Run, dist: Dist) -> str:
    """The line that opens training."""
    trainable = sum(p.numel() for p in run.params)
    return (f"training {config.model_id} ({inputs.weights.base_label}) with LoRA "
            f"r={run.model.peft_config['default'].r}: {trainable:,} trainable parameters; {len(data.train)} packs, "
            f"{data.schedule.steps_per_epoch} steps/epoch, {data.schedule.total_steps} steps, {dist.world} "
            f"process(es), attention {run.fwd.attn}, device {run.fwd.device}")


# --------------------------------------------------------------------------- restore
@dataclass(frozen=True)
class Position:
    """Where training stands: optimizer steps done, and the tokens trained in them."""

    step: int = 0
    trained_tokens: int = 0


def restore(start: Start, run: Run, *, data: Data, dist: Dist, say: Say) -> Position:
    """The checkpoint --resume continues from (adapter, optimizer, scheduler, RNG), or step 0;
    metrics.jsonl keeps the records up to there."""
    metrics = Metrics(start.out / METRICS, enabled=dist.main)
    if start.last is None:
        metrics.clear()
        dist.barrier()
        return Position()
    total = data.schedule.total_steps
    made_for = ckpt.read_state(start.last)["total_steps"]
    if made_for != total:
        raise ConfigError([Problem(str(start.last), "--resume", (
            f"the checkpoint is of a run of {made_for} steps, this run has {total} (the training data changed?). "
            "Resume with the data the run started with, or start a new run in another output_dir."))])
    state = ckpt.restore(start.last, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                         rank=dist.rank, device=run.fwd.device)
    at = Position(step=state["step"], trained_tokens=state["trained_tokens"])
    metrics.resume_at(at.step)
    say(f"resumed from {start.last} (step {at.step} of {data.schedule.total_steps}, "
        f"epoch {data.schedule.epoch_of(at.step):.2f})")
    dist.barrier()
    return at


# --------------------------------------------------------------------------- train
def train_steps(config: TrainConfig, start: Start, *, data: Data, run: Run, at: Position, end: int, dist: Dist,
                say: Say, show: bool) -> Position:
    """Optimizer steps from ``at`` up to ``end``; an evaluation and a checkpoint every
    ``data.every`` steps and at ``end``."""
    from tqdm.auto import tqdm

    metrics = Metrics(start.out / METRICS, enabled=dist.main)
    total = data.schedule.total_steps
    # which packs each rank trained on (under DDP): ranks must never share one
    packs_path = start.out / f"data-rank{dist.rank}.jsonl" if dist.enabled else None
    width = shutil.get_terminal_size((100, 20)).columns or 100  # 0 in some pseudo-terminals
    bar = tqdm(total=total, initial=at.step, desc="train", unit="step", disable=not show, ncols=min(width, 140))
    with pack_log(packs_path, at.step) as log_packs:
        while at.step < end:
            at, record = train_step(config, data, run=run, at=at, dist=dist, log_packs=log_packs)
            metrics.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            if at.step % data.every == 0 or at.step == end:
                msg = f"step {at.step}/{total}: loss {record['loss']:.4f}"
                eval_loss, where = evaluate_and_save(config, start, data=data, run=run, at=at, metrics=metrics,
                                                     dist=dist)
                if eval_loss is not None:
                    msg += f", eval loss {eval_loss:.4f}"
                (bar.write if show else say)(f"{msg}; checkpoint {where.name}")
    bar.close()
    return at


def train_step(config: TrainConfig, data: Data, *, run: Run, at: Position, dist: Dist,
               log_packs: Callable) -> tuple[Position, dict]:
    """One optimizer step over this rank's micro-batches; the new position and its metrics record."""
    t0 = time.perf_counter()
    indices = data.schedule.micro_batches(at.step, dist.rank)
    micro = [collate_packs(data.train, idx, run.pad_id, run.fwd.pad_multiple) for idx in indices]
    log_packs(at.step + 1, indices)
    global_trained, global_tokens = dist.sum([sum(int(b["num_trained"]) for b in micro),
                                              sum(b["num_tokens"] for b in micro)])
    step_loss = accumulate(run.ddp, micro, dist=dist, global_trained=global_trained, fwd=run.fwd)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, config.max_grad_norm))
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    at = Position(step=at.step + 1, trained_tokens=at.trained_tokens + int(global_trained))
    (summed,) = dist.sum([step_loss])
    seconds = time.perf_counter() - t0
    return at, {"step": at.step, "epoch": round(data.schedule.epoch_of(at.step), 4),
                "loss": summed / max(global_trained, 1), "lr": lr, "grad_norm": grad_norm,
                "trained_tokens": int(global_trained), "tokens": int(global_tokens),
                "tokens_per_s": global_tokens / seconds, "total_trained_tokens": at.trained_tokens}


def evaluate_and_save(config: TrainConfig, start: Start, *, data: Data, run: Run, at: Position, metrics: Metrics,
                      dist: Dist) -> tuple[float | None, Path]:
    """The validation loss (None without a validation set), and checkpoint ``at.step``'s folder."""
    eval_loss = None
    if data.valid is not None and len(data.valid):
        # the bare model: ranks run different numbers of eval batches, and DDP's forward
        # would wait for the others at every call
        eval_loss, eval_tokens = evaluate(run.model, data.valid, batch_size=config.eval_batch_size_per_device,
                                          dist=dist, pad_id=run.pad_id, fwd=run.fwd)
        metrics.write({"step": at.step, "epoch": round(data.schedule.epoch_of(at.step), 4), "eval_loss": eval_loss,
                       "eval_tokens": eval_tokens})
    where = ckpt.save(start.out, at.step, dist=dist, model=run.model, optimizer=run.optimizer,
                      scheduler=run.scheduler, keep=config.max_num_checkpoints, state=_state(start, data, at=at))
    return eval_loss, where


def _state(start: Start, data: Data, *, at: Position) -> dict:
    """A checkpoint's ``state.json``."""
    s = data.schedule
    return {"step": at.step, "epoch": s.epoch_of(at.step), "total_steps": s.total_steps,
            "trained_tokens": at.trained_tokens, "config": start.resolved,
            # where the data order stands: the next step's epoch and place in it
            "data": {"num_packs": len(data.train), "steps_per_epoch": s.steps_per_epoch,
                     "epoch": at.step // s.steps_per_epoch, "step_in_epoch": at.step % s.steps_per_epoch}}


# --------------------------------------------------------------------------- final output
def final_output(config: TrainConfig, inputs: Inputs, *, run: Run, out: Path, dist: Dist, say: Say) -> None:
    """The adapter and the tokenizer serving the trained format in ``out``; ``ranks.json``."""
    if dist.main:
        # name the base as the user did (an s3:// URL, a path), not the local cache folder
        ckpt.write_final(out, model=run.model, base_name=config.initial_base_model_ckpt_path or config.model_id,
                         tokenizer=inputs.hf_tokenizer, chat_template=inputs.chat_template)
        say(f"done: adapter and tokenizer (chat template `{inputs.spec.name or 'custom'}`) in {out}")
    ckpt.record_adapter_digest(out, run.model, dist)
