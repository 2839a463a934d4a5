"""Packed sequences on disk: Arrow IPC shards + ``manifest.json``, read back zero-copy.

One row per pack (columns: :mod:`template_forge.data.pack_writer`). ``position_ids``,
``cu_seqlens`` and ``labels`` are derived from ``seq_lengths`` when a batch is made
(:mod:`template_forge.data.packing`), so they are never stored. Shards are uncompressed Arrow IPC
streams of bounded size, memory-mapped zero-copy by plain pyarrow and by
``datasets.Dataset.from_file`` (which reads only the stream format; see
:func:`template_forge.data.tokenized.open_arrow`).

Writing is resumable and never leaves a manifest that lies: shards are written into
``.NAME.partial/`` beside the output, each through a temporary file and a rename, with a
``progress.json`` that lists the finished ones and the fingerprint of the plan they belong
to. A rerun with the same inputs and options continues after the last finished shard (the
plan is deterministic; every finished shard is checked against its size and sha256);
anything else starts over. The manifest is written last, and the folder is renamed into
place: ``NAME/`` exists only when complete. The whole run holds ``NAME``'s lock
(:mod:`template_forge.locks`); a folder is "up to date" only if every shard matches its
manifest. The schema and the shard writer are in :mod:`template_forge.data.pack_writer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from template_forge.data.pack_writer import (
    COLUMNS,
    Rows,
    pack_inputs,
    pack_manifest,
    shard_bounds,
    view,
    write_shard,
)
from template_forge.data.packing import cu_seqlens, labels, plan_packs, position_ids
from template_forge.data.provenance import (
    MANIFEST,
    PACKED_FORMAT,
    Provenance,
    check_shard_entries,
    first_problem,
    read_json_file,
    read_manifest,
    shard_problem,
    verify_shards,
)
from template_forge.data.tokenized import TokenizedDataset, open_shards
from template_forge.errors import DataError
from template_forge.io import occupied, replace_dir, write_atomic
from template_forge.locks import output_lock
from template_forge.tokens.encoder import Encoded

PROGRESS = "progress.json"
__all__ = ["COLUMNS", "Pack", "PackedDataset", "open_folder", "pack_tokenized", "packed_manifest", "write_packed"]


@dataclass(frozen=True)
class Pack(Encoded):
    """One pack: an :class:`~template_forge.tokens.encoder.Encoded` of several samples end to end, and
    their ``seq_lengths``. Arrays are read-only views of the memory-mapped shard.

    Examples:
        >>> p = Pack(np.array([1, 2, 3, 4], np.int32), np.array([0, 1, 0, 1], np.uint8), np.array([2, 2], np.int32))
        >>> p.position_ids.tolist(), p.cu_seqlens.tolist(), p.labels.tolist()
        ([0, 1, 0, 1], [0, 2, 4], [-100, 2, -100, 4])
    """

    seq_lengths: np.ndarray

    @property
    def position_ids(self) -> np.ndarray:
        return position_ids(self.seq_lengths)

    @property
    def cu_seqlens(self) -> np.ndarray:
        return cu_seqlens(self.seq_lengths)

    @property
    def labels(self) -> np.ndarray:
        return labels(self.input_ids, self.loss_mask, self.seq_lengths)

    def samples(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(input_ids, loss_mask)`` of each sample in the pack."""
        cuts = self.cu_seqlens
        return [(self.input_ids[a:b], self.loss_mask[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


# --------------------------------------------------------------------------- reading
class PackedDataset:
    """A ``tforge pack`` output folder, memory-mapped; ``ds[k]`` is a :class:`Pack` of views.

    Usage::

        ds = PackedDataset("train-packed")
        ds[0].input_ids, ds[0].seq_lengths, ds[0].labels    # views + derived arrays
        ds.sources(0)                                       # JSONL lines of its samples
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, expect=PACKED_FORMAT)
        self.context_length = _context_length(self.manifest, self.folder)
        self._batches: list[tuple[np.ndarray, ...]] = []
        self._sources: list = []
        for table in open_shards(self.folder, self.manifest, columns=COLUMNS):
            for batch in table.to_batches():
                ids, mask, seqs = (batch.column(c) for c in ("input_ids", "loss_mask", "seq_lengths"))
                self._batches.append((view(ids.offsets), view(ids.values), view(mask.values),
                                      view(seqs.offsets), view(seqs.values)))
                self._sources.append(batch.select(["source_lines", "source_starts"]))
        self._starts = np.cumsum([0] + [len(b[0]) - 1 for b in self._batches])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, k: int) -> tuple[int, int]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"pack {k} out of range: {self.folder} has {len(self)} packs")
        k %= len(self)
        b = int(np.searchsorted(self._starts, k, side="right")) - 1
        return b, k - int(self._starts[b])

    def __getitem__(self, k: int) -> Pack:
        b, r = self._locate(k)
        off, ids, mask, soff, seqs = self._batches[b]
        a, z = off[r], off[r + 1]
        return Pack(ids[a:z], mask[a:z], seqs[soff[r]:soff[r + 1]])

    def sources(self, k: int) -> tuple[list[int], list[int]]:
        """Where the samples of pack ``k`` come from: their JSONL lines, and the token each
        piece starts at in its conversation (0 unless a long one was split)."""
        b, r = self._locate(k)
        batch = self._sources[b]
        return batch.column(0)[r].as_py(), batch.column(1)[r].as_py()

    def __iter__(self) -> Iterator[Pack]:
        for k in range(len(self)):
            yield self[k]

    @property
    def num_tokens(self) -> np.ndarray:
        """Real tokens of every pack (``int64``)."""
        return np.concatenate([np.diff(b[0]) for b in self._batches]) if self._batches else np.zeros(0, np.int64)

    @property
    def seq_lengths(self) -> np.ndarray:
        """Lengths of every packed sample, pack after pack."""
        return np.concatenate([b[4][b[3][0]:b[3][-1]] for b in self._batches]) if self._batches else np.zeros(0, np.int32)

    def verify(self) -> None:
        """Recompute every shard's sha256 and compare with the manifest."""
        verify_shards(self.folder, self.manifest)


def _context_length(manifest: dict, folder: Path) -> int:
    value = manifest.get("packing", {}).get("context_length") if isinstance(manifest.get("packing"), dict) else None
    if type(value) is not int or value < 1:
        raise DataError(f"{folder / MANIFEST}: `packing.context_length` is {value!r}; expected an integer ≥ 1. "
                        "The manifest was edited or damaged; pack the folder again.")
    return value


# --------------------------------------------------------------------------- writing
def packed_manifest(folder: str | Path) -> dict | None:
    """The manifest of a ``tforge pack`` folder; ``None`` if ``folder`` is not one."""
    try:
        return read_manifest(folder, expect=PACKED_FORMAT)
    except DataError:
        return None


def _fingerprint(tokenized: dict, provenance: Provenance, options: dict) -> str:
    """What the packed bytes depend on: the tokenized rows, their provenance, the options."""
    key = {"format": PACKED_FORMAT, "tokenized_shards": [s["sha256"] for s in tokenized["shards"]],
           "inputs": pack_inputs(provenance, options), **options}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _resume(partial: Path, fingerprint: str, bounds: list[tuple[int, int]]) -> list[dict]:
    """Shards already finished by an interrupted run of the same plan, each checked against
    the plan, its size and its sha256; otherwise start afresh. Anything else in ``partial``
    (a half-written shard, a temporary file) belongs to the dead run and is removed."""
    done = _finished(partial, fingerprint, bounds) if partial.is_dir() and not partial.is_symlink() else []
    if not done:
        _remove(partial)
        partial.mkdir(parents=True)
    keep = {s["file"] for s in done} | {PROGRESS}
    for stray in partial.iterdir():
        if stray.name not in keep:
            _remove(stray)
    return done


def _finished(partial: Path, fingerprint: str, bounds: list[tuple[int, int]]) -> list[dict]:
    where = partial / PROGRESS
    try:
        state = read_json_file(where, what="progress file") if where.is_file() else {}
    except DataError:
        return []  # not one this version wrote: start over
    if state.get("fingerprint") != fingerprint:
        return []
    done: list[dict] = []
    for k, shard in enumerate(check_shard_entries(state.get("shards"), where=where)):
        if (k >= len(bounds) or shard["file"] != _shard_name(k) or shard["rows"] != bounds[k][1] - bounds[k][0]
                or shard_problem(partial, shard, where=where)):
            break
        done.append(shard)
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.arrow"


def pack_tokenized(tokenized_dir: str | Path, out_dir: str | Path, *, context_length: int, overflow: str = "drop",
                   seed: int = 0, shard_bytes: int = 256 << 20, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, extra: dict | None = None,
                   wait: bool = False, on_wait: Callable[[str], None] | None = None) -> dict:
    """Pack a ``tforge tokenize`` folder into ``out_dir``; returns the manifest.

    The run holds ``out_dir``'s lock (:func:`template_forge.locks.output_lock`) throughout:
    another run into ``out_dir`` raises :class:`DataError`, or is waited for with ``wait``.
    An ``out_dir`` already packed from the same rows with the same options, whose shards
    all match the sizes and sha256 of its manifest, is up to date: its manifest is returned,
    with ``"reused": True``, and nothing is written. One whose shards do not match is packed
    again (the returned manifest says why under ``"rebuilt"``).

    Args:
        overflow: samples longer than ``context_length``: ``drop`` (counted), ``truncate``
            (first ``context_length`` tokens kept) or ``split`` (pieces of ``context_length``).
        seed: orders equal-length samples and shuffles the packs; same inputs + seed → same bytes.
        progress: called with ``(packs just written, total packs)``, first with the packs a
            resumed run already had, then as each shard is finished.
        extra: more manifest entries (``tforge prepare`` records its tokenize step here).
        on_wait: told, once, that the run waits for another one (with ``wait``).
    """
    with output_lock(out_dir, wait=wait, on_wait=on_wait):
        return write_packed(tokenized_dir, out_dir, context_length=context_length, overflow=overflow, seed=seed,
                            shard_bytes=shard_bytes, overwrite=overwrite, progress=progress, extra=extra)


def write_packed(tokenized_dir: str | Path, out_dir: str | Path, *, context_length: int, overflow: str = "drop",
                 seed: int = 0, shard_bytes: int = 256 << 20, overwrite: bool = False,
                 progress: Callable[[int, int], None] | None = None, extra: dict | None = None) -> dict:
    """:func:`pack_tokenized` for a caller that already holds ``out_dir``'s lock."""
    tokenized_dir, out_dir = Path(tokenized_dir), Path(out_dir)
    tokenized = TokenizedDataset(tokenized_dir)
    provenance = Provenance.of_manifest(tokenized.manifest, where=str(tokenized_dir / MANIFEST))
    options = {"context_length": int(context_length), "overflow": overflow, "seed": int(seed),
               "strategy": "bfd", "shard_bytes": int(shard_bytes)}
    fingerprint = _fingerprint(tokenized.manifest, provenance, options)
    existing = packed_manifest(out_dir) if out_dir.exists() else None
    damage = None
    if existing and existing.get("fingerprint") == fingerprint and not extra:
        damage = first_problem(out_dir, existing)
        if damage is None:
            return {**existing, "reused": True}  # up to date: these rows, packed with these options
    elif occupied(out_dir) and not overwrite:
        raise DataError(f"{out_dir} already exists"
                        + (" and was packed from other rows or options" if existing else "")
                        + ". Choose another output folder or pass --overwrite.")
    manifest = _write(tokenized_dir, tokenized, provenance, out_dir, options, fingerprint, progress, extra or {})
    return {**manifest, "rebuilt": damage} if damage else manifest


def _write(tokenized_dir: Path, tokenized: TokenizedDataset, provenance: Provenance, out_dir: Path, options: dict,
           fingerprint: str, progress, extra: dict) -> dict:
    """Plan, write (or finish) ``.NAME.partial/`` shard by shard, then rename it onto ``out_dir``."""
    rows = Rows(tokenized)
    lengths = rows.lengths
    plan = plan_packs(lengths, options["context_length"], overflow=options["overflow"], seed=options["seed"])
    partial = out_dir.parent / f".{out_dir.name}.partial"
    bounds = shard_bounds(plan, options["shard_bytes"])
    shards = _resume(partial, fingerprint, bounds)
    if progress:
        progress(sum(s["rows"] for s in shards), plan.num_packs)
    for number, (lo, hi) in enumerate(bounds[len(shards):], start=len(shards)):
        shards.append(write_shard(partial / _shard_name(number), rows, plan, lo, hi, 8 << 20))
        write_atomic(partial / PROGRESS, json.dumps({"fingerprint": fingerprint, "shards": shards}, indent=1))
        if progress:
            progress(hi - lo, plan.num_packs)
    manifest = pack_manifest(tokenized_dir, provenance, plan, lengths, shards, options, fingerprint, extra)
    write_atomic(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (partial / PROGRESS).unlink(missing_ok=True)
    os.chmod(partial, 0o755)
    replace_dir(partial, out_dir)
    return manifest


def open_folder(folder: str | Path) -> PackedDataset | TokenizedDataset:
    """A ``tforge pack`` folder as a :class:`PackedDataset`, a ``tforge tokenize`` one as a
    :class:`~template_forge.data.tokenized.TokenizedDataset` (by the manifest's format)."""
    kind = read_manifest(folder).get("format")
    return PackedDataset(folder) if kind == PACKED_FORMAT else TokenizedDataset(folder)
