"""Checkpoints under ``OUTPUT_DIR/checkpoints/step-NNNNNN/``, written atomically and verified
before use.

A checkpoint holds the adapter (``adapter_model.safetensors`` + ``adapter_config.json``),
``optimizer.pt``, ``scheduler.pt`` (tensors only: loaded with ``weights_only=True``), one
``rng-rankR.safetensors`` per rank (torch, CUDA, numpy and Python generators; see
:mod:`tforge_trainer.rng`), ``state.json`` (the step, the data position, the world size,
the config it was made with) and, written last, ``manifest.json`` (every file's size and
sha256; see :mod:`tforge_trainer.checkpoint_verify`). It is written into
``.step-NNNNNN.partial/`` and renamed into place once complete, so a ``kill -9`` at any
moment leaves either no checkpoint or a whole one. Only the newest ``max_num_checkpoints``
are kept.

When the run ends, :func:`write_final` moves the adapter and the tokenizer (serving the
trained format) into ``OUTPUT_DIR`` itself, and :func:`record_adapter_digest` writes
``ranks.json``: every rank's digest of its final adapter (under DDP they must agree).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from template_forge.errors import DataError
from tforge_trainer.checkpoint_verify import step_of, write_manifest
from tforge_trainer.distributed import Dist
from tforge_trainer.rng import read_rng_file, rng_file, write_rng_file


def folder(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def name(step: int) -> str:
    return f"step-{step:06d}"


def partial(output_dir: str | Path, step: int) -> Path:
    return folder(output_dir) / f".{name(step)}.partial"


def listing(output_dir: str | Path) -> list[Path]:
    """Everything named ``step-NNNNNN`` under ``checkpoints/``, oldest first: whole, damaged,
    or not even a folder (see :func:`~tforge_trainer.checkpoint_verify.choose`)."""
    root = folder(output_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if step_of(p) is not None), key=step_of)


def remove(path: Path) -> None:
    """Remove a checkpoint, whatever is at its name (a folder, a file, a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def set_aside(ckpt: Path) -> Path:
    """Rename a damaged checkpoint to ``.step-NNNNNN.damaged`` (kept for inspection, never
    resumed or pruned; a later one of the same step replaces it)."""
    target = ckpt.with_name(f".{ckpt.name}.damaged")
    remove(target)
    os.replace(ckpt, target)
    return target


def fsync_tree(path: Path) -> None:
    """Flush every file under ``path`` to disk (before a rename makes it visible)."""
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def begin(output_dir: str | Path, step: int) -> Path:
    """Start checkpoint ``step``: an empty ``.partial`` folder (rank 0 only)."""
    tmp = partial(output_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(tmp: Path, rank: int) -> None:
    write_rng_file(rng_file(tmp, rank))


def save_adapter(model, folder: Path, *, base_name: str | None = None) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json`` (not PEFT's empty model-card
    template); ``base_name`` replaces the recorded ``base_model_name_or_path``."""
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)
    if base_name is not None:
        config_path = folder / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_name
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_main(tmp: Path, *, model, optimizer, scheduler, state: dict) -> None:
    """The adapter, optimizer, scheduler and ``state.json`` (rank 0 only)."""
    save_adapter(model, tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def commit(output_dir: str | Path, step: int, *, keep: int) -> Path:
    """Rename the finished ``.partial`` folder into place, then drop all but the newest ``keep``."""
    tmp = partial(output_dir, step)
    write_manifest(tmp, step)
    fsync_tree(tmp)
    final = folder(output_dir) / name(step)
    remove(final)
    os.replace(tmp, final)
    for old in listing(output_dir)[:-keep]:
        remove(old)
    return final


def clean_partials(output_dir: str | Path) -> None:
    """Remove ``.partial`` folders a killed run left behind."""
    root = folder(output_dir)
    if root.is_dir():
        for p in root.glob(".step-*.partial"):
            shutil.rmtree(p, ignore_errors=True)


def read_state(ckpt: Path) -> dict:
    """``state.json`` of a checkpoint :func:`~tforge_trainer.checkpoint_verify.verify` passed."""
    return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))


def _load(path: Path, what: str, load):
    """``load()``, with any failure of a damaged or foreign file (a pickle carrying objects,
    refused by ``weights_only=True``; a truncated archive; a state of another shape) turned
    into a :class:`DataError` naming ``path``."""
    try:
        return load()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{path}: cannot load the checkpoint's {what} ({type(exc).__name__}: {first}). Only "
                        "plain tensors are loaded (never pickled objects). Resume from an earlier checkpoint "
                        "(move this one aside), or start the run again without --resume.") from None


def restore(ckpt: Path, *, model, optimizer, scheduler, rank: int, device: torch.device) -> dict:
    """Load a verified checkpoint into the run's objects; returns its ``state.json``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = ckpt / "adapter_model.safetensors"
    weights = _load(adapter, "adapter", lambda: load_file(str(adapter), device=str(device)))
    result = _load(adapter, "adapter", lambda: set_peft_model_state_dict(_unwrap(model), weights))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise DataError(f"{ckpt / 'adapter_model.safetensors'}: the checkpoint's adapter weights do not fit this "
                        f"run's model (unexpected keys {unexpected[:3]}): the checkpoint was made with other base "
                        "weights or another adapter. Point initial_base_model_ckpt_path at the weights the run "
                        "started from, or start a new run in another output_dir.")
    for path, target, where in ((ckpt / "optimizer.pt", optimizer, device), (ckpt / "scheduler.pt", scheduler, None)):
        state = _load(path, path.stem, lambda p=path, w=where: torch.load(p, map_location=w, weights_only=True))
        _load(path, path.stem, lambda t=target, s=state: t.load_state_dict(s))
    read_rng_file(rng_file(ckpt, rank))
    return read_state(ckpt)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def save(output_dir: Path, step: int, *, dist: Dist, model, optimizer, scheduler, keep: int, state: dict) -> Path:
    """Checkpoint ``step`` of every rank (each its RNG, rank 0 the rest); returns its folder."""
    tmp = partial(output_dir, step)
    if dist.main:
        begin(output_dir, step)
    dist.barrier()
    write_rng(tmp, dist.rank)
    dist.barrier()
    if dist.main:
        write_main(tmp, model=model, optimizer=optimizer, scheduler=scheduler,
                   state={**state, "world_size": dist.world})
        commit(output_dir, step, keep=keep)
    dist.barrier()
    return folder(output_dir) / name(step)


def write_final(output_dir: Path, *, model, base_name: str, tokenizer, chat_template: str) -> None:
    """The adapter + ``tokenizer`` (loaded before the first step) serving ``chat_template``,
    moved into ``output_dir`` file by file once all of them are written (rank 0 only)."""
    from template_forge.io import install_chat_template

    tmp = output_dir / ".final.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_adapter(model, tmp, base_name=base_name)
    tokenizer.save_pretrained(tmp)
    install_chat_template(tmp, chat_template)
    fsync_tree(tmp)
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            os.replace(f, output_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def record_adapter_digest(output_dir: Path, model, dist: Dist) -> None:
    """Each rank's final adapter digest, in ``ranks.json`` (they must agree under DDP)."""
    h = hashlib.sha256()
    for param_name, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        h.update(param_name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    gathered = dist.gather(h.hexdigest())
    if dist.main:
        (output_dir / "ranks.json").write_text(
            json.dumps({"world_size": dist.world, "adapter_sha256": gathered}) + "\n", encoding="utf-8")
