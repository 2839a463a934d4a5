"""Checkpoint manifests, and the verification a checkpoint passes before ``--resume`` uses it.

Every checkpoint ends with ``manifest.json`` — each of its files with its size and sha256 —
written last, inside the ``.partial`` folder, before the rename that makes it visible::

    {"format": 1, "step": 40, "files": {"adapter_model.safetensors": {"size": 1234, "sha256": "…"}, …}}

:func:`verify` returns the first problem of a checkpoint (``None`` when it is whole): the
folder is a folder, the manifest is there and well formed, it lists every file a checkpoint
needs (the adapter, optimizer, scheduler, ``state.json``, an RNG file per rank), each file
has its recorded size and hash, and ``state.json`` agrees with the folder (its step, a step
within the run's total, a world size). Whether it fits *this* run (config, world size, total
steps) the recipe checks, and refuses a resume that does not. :func:`choose` walks the checkpoints newest first
and takes the first whole one; the damaged ones it passes are returned, to be reported.

A checkpoint without a manifest (written before tforge wrote them, or cut short) is never
used: it cannot be verified, and its ``rng-rank*.pt`` is a pickle that tforge no longer loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from template_forge.data.provenance import sha256_file
from tforge_trainer.rng import rng_file

MANIFEST = "manifest.json"
FORMAT = 1
MAIN_FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "state.json")
MAX_JSON_BYTES = 16 * 2**20  # manifest.json and state.json: a few KiB; more is not ours
MAX_WORLD = 1 << 16
_NAME = re.compile(r"^step-(\d{6,})$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a plain name in the folder: no "/", no ".."
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Damaged(Exception):
    """A checkpoint's first problem (internal: :func:`verify` returns its text)."""


@dataclass(frozen=True)
class Choice:
    """The checkpoint ``--resume`` continues from (None: none is whole) and the damaged
    ones newer than it, each with its first problem."""

    chosen: Path | None
    damaged: tuple[tuple[Path, str], ...]


def step_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def write_manifest(folder: Path, step: int) -> Path:
    """``manifest.json`` over every file now in ``folder`` (call it last)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    path = folder / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1) + "\n",
                    encoding="utf-8")
    return path


def verify(ckpt: Path) -> str | None:
    """The first problem of checkpoint ``ckpt``, or None when it is whole.

    Examples:
        >>> verify(Path("/nonexistent/step-000002"))
        'is missing'
    """
    try:
        _verify(ckpt)
    except Damaged as exc:
        return str(exc)
    except OSError as exc:  # unreadable (permissions, I/O error): as unusable as damaged
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return None


def choose(candidates: list[Path]) -> Choice:
    """The newest whole checkpoint of ``candidates`` (oldest first), and the damaged ones
    newer than it."""
    damaged = []
    for ckpt in reversed(candidates):
        problem = verify(ckpt)
        if problem is None:
            return Choice(chosen=ckpt, damaged=tuple(damaged))
        damaged.append((ckpt, problem))
    return Choice(chosen=None, damaged=tuple(damaged))


def _verify(ckpt: Path) -> None:
    if ckpt.is_symlink() or (ckpt.exists() and not ckpt.is_dir()):
        raise Damaged("is not a folder (a file or a link is where the checkpoint folder should be)")
    if not ckpt.is_dir():
        raise Damaged("is missing")
    files = _manifest(ckpt)
    for name, entry in files.items():
        _check_file(ckpt / name, entry)
    state = _state(ckpt)
    needed = list(MAIN_FILES) + [rng_file(ckpt, r).name for r in range(state["world_size"])]
    missing = [n for n in needed if n not in files]
    if missing:
        raise Damaged(f"{MANIFEST} does not list {', '.join(missing)} (every checkpoint file must be in it)")


def _json(path: Path) -> dict:
    if path.is_symlink() or not path.is_file():
        raise Damaged(f"{path.name} is missing" if not path.exists() else f"{path.name} is not a file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise Damaged(f"{path.name} is {path.stat().st_size} bytes, more than {MAX_JSON_BYTES} (not tforge's)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path.name}: expected a JSON object, found {type(data).__name__}")
    return data


def _manifest(ckpt: Path) -> dict:
    if not (ckpt / MANIFEST).exists() and not (ckpt / MANIFEST).is_symlink():
        raise Damaged(f"has no {MANIFEST}: it was cut short, or written by a tforge older than checkpoint "
                      "manifests (such checkpoints are not resumed: their RNG files are pickles)")
    data = _json(ckpt / MANIFEST)
    files = data.get("files")
    if data.get("format") != FORMAT or not isinstance(files, dict) or data.get("step") != step_of(ckpt):
        raise Damaged(f"{MANIFEST} is not a format-{FORMAT} manifest of step {step_of(ckpt)} "
                      f"(format {data.get('format')!r}, step {data.get('step')!r})")
    for name, entry in files.items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("size"), int)
              and isinstance(entry.get("sha256"), str) and _SHA256.match(entry["sha256"]))
        if not (_FILE.match(name) and name != MANIFEST and ok):
            raise Damaged(f"{MANIFEST}: entry {name[:80]!r} is not a file name with a size and a sha256")
    return files


def _check_file(path: Path, entry: dict) -> None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise Damaged(f"{path.name} is not a file")
    if not path.exists():
        raise Damaged(f"{path.name} is missing")
    size = path.stat().st_size
    if size != entry["size"]:
        raise Damaged(f"{path.name} has {size} bytes, the manifest says {entry['size']} (truncated or replaced)")
    if sha256_file(path) != entry["sha256"]:
        raise Damaged(f"{path.name} does not match its sha256 in the manifest (corrupted or modified)")


def _state(ckpt: Path) -> dict:
    state = _json(ckpt / "state.json")
    step, total, world = state.get("step"), state.get("total_steps"), state.get("world_size")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (step, total, world)):
        raise Damaged("state.json: step, total_steps and world_size must be integers")
    if step != step_of(ckpt) or not 1 <= step <= total or not 1 <= world <= MAX_WORLD:
        raise Damaged(f"state.json says step {step} of {total} (world size {world}); the folder is step "
                      f"{step_of(ckpt)}")
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("trained_tokens"), int):
        raise Damaged("state.json: no `config` object or `trained_tokens` integer")
    return state
