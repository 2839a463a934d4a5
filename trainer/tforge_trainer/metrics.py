"""What a run records as it goes, one JSON object a line (no torch here: ``tforge plot`` reads
these files without it).

* ``metrics.jsonl`` (rank 0): one line per optimizer step, one per evaluation::

      {"step": 1, "epoch": 0.125, "loss": 4.1, "lr": 0.005, "grad_norm": 1.3, "trained_tokens": 310,
       "tokens": 720, "tokens_per_s": 5300.0, "total_trained_tokens": 310}
      {"step": 2, "epoch": 0.25, "eval_loss": 3.9, "eval_tokens": 150}

* ``data-rankR.jsonl`` (under DDP, each rank): the packs rank R trained on at each step
  (ranks must never share one)::

      {"step": 1, "packs": [[3, 17], [8, 1]]}

A resumed run first drops the lines a killed run wrote after the checkpoint it resumes from.

Examples:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> metrics = Metrics(folder / METRICS, enabled=True)
    >>> for step in (1, 2, 3):
    ...     metrics.write({"step": step, "loss": 1.0 / step})
    >>> metrics.resume_at(2)
    >>> [r["step"] for r in read_metrics(folder)]
    [1, 2]
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from template_forge.errors import DataError

METRICS = "metrics.jsonl"


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


@dataclass(frozen=True)
class Metrics:
    """``metrics.jsonl``, written by rank 0 only (``enabled``)."""

    path: Path
    enabled: bool

    def resume_at(self, step: int) -> None:
        """Keep the records up to checkpoint ``step``."""
        if self.enabled:
            truncate_jsonl(self.path, step)

    def clear(self) -> None:
        """A run from step 0: no records of an earlier one."""
        if self.enabled and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def pack_log(path: Path | None, start: int) -> Iterator[Callable]:
    """``write(step, indices)`` appending to ``data-rankR.jsonl`` at ``path``, continued from
    checkpoint ``start`` (a fresh file at step 0); a no-op when ``path`` is None."""
    if path is None:
        yield lambda step, indices: None
        return
    truncate_jsonl(path, start)
    with open(path, "a" if start else "w", encoding="utf-8", buffering=1) as fh:
        yield lambda step, indices: fh.write(json.dumps({"step": step, "packs": [i.tolist() for i in indices]}) + "\n")


def read_metrics(folder: Path) -> list[dict]:
    """The records of ``folder/metrics.jsonl`` (a run's ``output_dir``), in order."""
    path = folder / METRICS
    if not path.is_file():
        raise DataError(f"{folder}: no metrics.jsonl. Pass the output_dir of a `tforge train` run.")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
    return records
