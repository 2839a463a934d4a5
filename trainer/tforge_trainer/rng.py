"""One rank's random generators (torch, CUDA, numpy, Python) in a file that cannot carry code.

``rng-rankR.safetensors`` holds the generator states as plain tensors and a little JSON in
the safetensors header — never a pickle, so a checkpoint copied from elsewhere cannot run
code when it is resumed (``torch.load(..., weights_only=False)`` would run whatever the
file's pickle says).

    tensors                      header metadata (JSON strings)
    torch       uint8 [5056]     format  "1"
    cuda.0..N   uint8 [16]       numpy   {"kind", "pos", "has_gauss", "cached_gaussian"}
    numpy.key   int64 [624]      python  {"version", "gauss_next"}
    python.state int64 [625]

Examples:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng-rank0.safetensors"
    >>> write_rng_file(path); a = (torch.rand(2), np.random.rand(), random.random())
    >>> read_rng_file(path); b = (torch.rand(2), np.random.rand(), random.random())
    >>> bool(torch.equal(a[0], b[0])) and a[1:] == b[1:]
    True
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from template_forge.errors import DataError

FORMAT = "1"


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-rank{rank}.safetensors"


def write_rng_file(path: Path) -> None:
    """This process's generator states, in ``path``."""
    from safetensors.torch import save_file

    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy.key": torch.from_numpy(key.astype(np.int64)),
               "python.state": torch.tensor(internal, dtype=torch.int64)}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    metadata = {"format": FORMAT, "python": json.dumps({"version": version, "gauss_next": gauss_next}),
                "numpy": json.dumps({"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                                     "cached_gaussian": float(cached)})}
    save_file(tensors, str(path), metadata=metadata)


def read_rng_file(path: Path) -> None:
    """Set this process's generators from ``path``; a file that is not one (truncated, of
    another format, tampered with) is a :class:`DataError` naming it, and sets nothing."""
    try:
        states = _read(path)
    except DataError:
        raise
    except Exception as exc:  # safetensors, JSON, shapes: every way a damaged file can fail
        raise DataError(f"{path}: not a tforge RNG state file ({type(exc).__name__}: {str(exc)[:200]}). "
                        "The checkpoint is damaged: resume from an earlier one, or start the run again.") from None
    _apply(states)


def _read(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if metadata.get("format") != FORMAT:
        raise DataError(f"{path}: RNG state format {metadata.get('format')!r}, expected {FORMAT!r}. "
                        "Resume with the tforge version that wrote the checkpoint, or start the run again.")
    np_meta, py_meta = json.loads(metadata["numpy"]), json.loads(metadata["python"])
    key = tensors["numpy.key"].numpy().astype(np.uint32)
    internal = tuple(int(x) for x in tensors["python.state"].tolist())
    gauss_next = py_meta["gauss_next"]
    if not (key.shape == (624,) and len(internal) == 625 and (gauss_next is None or isinstance(gauss_next, float))):
        raise ValueError("unexpected shapes")
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    numpy_state = (str(np_meta["kind"]), key, int(np_meta["pos"]), int(np_meta["has_gauss"]),
                   float(np_meta["cached_gaussian"]))
    # set nothing until every part has been checked: a half-applied state would be silent
    probe = np.random.RandomState()
    probe.set_state(numpy_state)
    random.Random().setstate((int(py_meta["version"]), internal, gauss_next))
    torch.Generator().set_state(tensors["torch"])
    return {"torch": tensors["torch"], "numpy": numpy_state, "cuda": cuda,
            "python": (int(py_meta["version"]), internal, gauss_next)}


def _apply(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        count = min(len(states["cuda"]), torch.cuda.device_count())
        for i in range(count):
            torch.cuda.set_rng_state(states["cuda"][i], i)
