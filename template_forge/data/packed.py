"""Packed sequences on disk: Arrow IPC shards + ``manifest.json``, read back zero-copy.

One row per pack. Columns: ``input_ids`` (``list<int32>``), ``loss_mask`` (``list<uint8>``;
Arrow booleans are bit-packed and cannot be viewed from numpy), ``seq_lengths``
(``list<int32>``, the samples inside the pack), ``num_tokens`` (``int32``),
``source_lines`` (``list<int64>``, the JSONL line of each sample) and ``source_starts``
(``list<int32>``, where each piece starts in its sample: 0 unless a long sample was split).
``position_ids``,
``cu_seqlens`` and ``labels`` are derived from ``seq_lengths`` when a batch is made
(:mod:`template_forge.data.packing`), so they are never stored. Shards are uncompressed Arrow IPC
streams of bounded size, memory-mapped zero-copy by plain pyarrow and by
``datasets.Dataset.from_file`` (which reads only the stream format; see
:func:`template_forge.data.tokenized.open_arrow`).

Writing is resumable and never leaves a manifest that lies: shards are written into
``.NAME.partial/`` beside the output, each through a temporary file and a rename, with a
``progress.json`` that lists the finished ones and the fingerprint of the plan they belong
to. A rerun with the same inputs and options continues after the last finished shard (the
plan is deterministic); anything else starts over. The manifest is written last, and the
folder is renamed into place: ``NAME/`` exists only when complete.
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

from template_forge.data.packing import Plan, cu_seqlens, labels, plan_packs, position_ids
from template_forge.data.provenance import (
    MANIFEST,
    PACKED_FORMAT,
    HashingFile,
    Provenance,
    read_manifest,
    sha256_file,
    verify_shards,
)
from template_forge.data.tokenized import TokenizedDataset, open_arrow
from template_forge.errors import DataError
from template_forge.io import occupied, replace_dir, write_atomic
from template_forge.tokens.encoder import Encoded

PROGRESS = "progress.json"
COLUMNS = ["input_ids", "loss_mask", "seq_lengths", "num_tokens", "source_lines", "source_starts"]


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.uint8())),
        ("seq_lengths", pa.list_(pa.int32())), ("num_tokens", pa.int32()), ("source_lines", pa.list_(pa.int64())),
        ("source_starts", pa.list_(pa.int32())),
    ])


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
        self.context_length = int(self.manifest["packing"]["context_length"])
        self._batches: list[tuple[np.ndarray, ...]] = []
        self._sources: list = []
        for shard in self.manifest["shards"]:
            path = self.folder / shard["file"]
            if not path.is_file():
                raise DataError(f"{self.folder}: shard {shard['file']} listed in the manifest is missing.")
            table = open_arrow(path)
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise DataError(f"{path}: no column {', '.join(missing)}; this folder was packed by another "
                                "version of tforge. Pack it again.")
            for batch in table.to_batches():
                ids, mask, seqs = (batch.column(c) for c in ("input_ids", "loss_mask", "seq_lengths"))
                self._batches.append((_np(ids.offsets), _np(ids.values), _np(mask.values),
                                      _np(seqs.offsets), _np(seqs.values)))
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


def _np(array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=True)


# --------------------------------------------------------------------------- writing
class _Rows:
    """The tokenized rows, as zero-copy arrays per record batch, for gathering pieces."""

    def __init__(self, ds: TokenizedDataset):
        self.ids: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        chunk, start, lines, lengths = [], [], [], []
        for table in ds._tables:
            for batch in table.to_batches():
                ids, mask = batch.column("input_ids"), batch.column("loss_mask")
                offsets = _np(ids.offsets)
                if not np.array_equal(offsets, _np(mask.offsets)):
                    raise DataError(f"{ds.folder}: input_ids and loss_mask rows differ in length; re-tokenize.")
                self.ids.append(_np(ids.values))
                self.mask.append(_np(mask.values))
                chunk.append(np.full(len(offsets) - 1, len(self.ids) - 1, dtype=np.int64))
                start.append(offsets[:-1].astype(np.int64))
                lengths.append(np.diff(offsets).astype(np.int64))
                lines.append(_np(batch.column("line")))
        empty = np.zeros(0, np.int64)
        self.chunk = np.concatenate(chunk) if chunk else empty
        self.start = np.concatenate(start) if start else empty
        self.lines = np.concatenate(lines).astype(np.int64) if lines else empty
        self.lengths = np.concatenate(lengths) if lengths else empty

    def gather(self, sample: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate the pieces ``[start, start + length)`` of rows ``sample``, in order."""
        if not len(sample):
            return np.zeros(0, np.int32), np.zeros(0, np.uint8)
        # One slice per piece, copied by np.concatenate: cheaper than a fancy-index gather of
        # every token, since pieces are whole conversations (hundreds of tokens on average).
        chunk = self.chunk[sample].tolist()
        first = (self.start[sample] + start).tolist()
        last = (self.start[sample] + start + length).tolist()
        ids = np.concatenate([self.ids[c][a:z] for c, a, z in zip(chunk, first, last)])
        mask = np.concatenate([self.mask[c][a:z] for c, a, z in zip(chunk, first, last)])
        return ids, mask


def _shard_bounds(plan: Plan, shard_bytes: int) -> list[tuple[int, int]]:
    """Consecutive pack ranges of about ``shard_bytes`` each (at least one pack per shard)."""
    pieces = np.diff(plan.pack_offsets)
    cum = np.concatenate([[0], np.cumsum(plan.pack_lengths * 5 + pieces * 12 + 16)])
    bounds, a = [], 0
    while a < plan.num_packs:
        z = max(a + 1, int(np.searchsorted(cum, cum[a] + shard_bytes, side="right")) - 1)
        bounds.append((a, z))
        a = z
    return bounds


def _write_shard(path: Path, rows: _Rows, plan: Plan, lo: int, hi: int, batch_tokens: int) -> dict:
    """Write packs ``lo:hi`` to ``path`` through ``path.tmp`` and a rename; returns its manifest entry."""
    import pyarrow as pa

    tmp = path.with_name(path.name + ".tmp")
    trained = first_trained = 0
    with open(tmp, "wb") as fh, pa.PythonFile(hashing := HashingFile(fh), mode="w") as sink, \
            pa.ipc.new_stream(sink, _schema()) as writer:
        a = lo
        while a < hi:  # record batches of about batch_tokens tokens bound the memory used
            lens = plan.pack_lengths[a:hi]
            z = a + max(1, int(np.searchsorted(np.cumsum(lens), batch_tokens, side="right")))
            p0, p1 = int(plan.pack_offsets[a]), int(plan.pack_offsets[z])
            sample, start, length = plan.sample[p0:p1], plan.start[p0:p1], plan.length[p0:p1]
            ids, mask = rows.gather(sample, start, length)
            pieces = (plan.pack_offsets[a:z + 1] - p0).astype(np.int32)
            cum = np.concatenate([[0], np.cumsum(length)])
            trained += int(mask.sum(dtype=np.int64))
            first_trained += int(mask[cum[:-1]].sum(dtype=np.int64)) if len(mask) else 0
            tok_off = cum[pieces].astype(np.int32)
            writer.write_batch(pa.record_batch([
                pa.ListArray.from_arrays(pa.array(tok_off), pa.array(ids)),
                pa.ListArray.from_arrays(pa.array(tok_off), pa.array(mask)),
                pa.ListArray.from_arrays(pa.array(pieces), pa.array(length.astype(np.int32))),
                pa.array(np.diff(tok_off)),
                pa.ListArray.from_arrays(pa.array(pieces), pa.array(rows.lines[sample])),
                pa.ListArray.from_arrays(pa.array(pieces), pa.array(start.astype(np.int32))),
            ], schema=_schema()))
            a = z
        writer.close()
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return {"file": path.name, "rows": hi - lo, "bytes": path.stat().st_size, "sha256": hashing.digest.hexdigest(),
            "trained_tokens": trained, "label_tokens": trained - first_trained}


def packed_manifest(folder: str | Path) -> dict | None:
    """The manifest of a ``tforge pack`` folder; ``None`` if ``folder`` is not one."""
    try:
        return read_manifest(folder, expect=PACKED_FORMAT)
    except DataError:
        return None


def _fingerprint(tokenized: dict, provenance: Provenance, options: dict) -> str:
    """What the packed bytes depend on: the tokenized rows, their provenance, the options."""
    key = {"format": PACKED_FORMAT, "tokenized_shards": [s["sha256"] for s in tokenized["shards"]],
           "inputs": _inputs(provenance, options), **options}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _resume(partial: Path, fingerprint: str) -> list[dict]:
    """Shards already finished by an interrupted run of the same plan; otherwise start afresh."""
    done: list[dict] = []
    try:
        state = json.loads((partial / PROGRESS).read_text())
        if state.get("fingerprint") == fingerprint:
            for shard in state["shards"]:
                path = partial / shard["file"]
                if not path.is_file() or path.stat().st_size != shard["bytes"]:
                    break
                done.append(shard)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not done:
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    keep = {s["file"] for s in done} | {PROGRESS}
    for stray in partial.iterdir():  # half-written shards of the interrupted run
        if stray.name not in keep:
            stray.unlink()
    return done


def pack_tokenized(tokenized_dir: str | Path, out_dir: str | Path, *, context_length: int, overflow: str = "drop",
                   seed: int = 0, shard_bytes: int = 256 << 20, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, extra: dict | None = None) -> dict:
    """Pack a ``tforge tokenize`` folder into ``out_dir``; returns the manifest.

    An ``out_dir`` already packed from the same rows with the same options is up to date:
    its manifest is returned, with ``"reused": True``, and nothing is written.

    Args:
        overflow: samples longer than ``context_length``: ``drop`` (counted), ``truncate``
            (first ``context_length`` tokens kept) or ``split`` (pieces of ``context_length``).
        seed: orders equal-length samples and shuffles the packs; same inputs + seed → same bytes.
        progress: called with ``(packs just written, total packs)``, first with the packs a
            resumed run already had, then as each shard is finished.
        extra: more manifest entries (``tforge prepare`` records its tokenize step here).
    """
    tokenized_dir, out_dir = Path(tokenized_dir), Path(out_dir)
    tokenized = TokenizedDataset(tokenized_dir)
    provenance = Provenance.of_manifest(tokenized.manifest, where=str(tokenized_dir / MANIFEST))
    options = {"context_length": int(context_length), "overflow": overflow, "seed": int(seed),
               "strategy": "bfd", "shard_bytes": int(shard_bytes)}
    fingerprint = _fingerprint(tokenized.manifest, provenance, options)
    if out_dir.exists():
        existing = packed_manifest(out_dir)
        if existing and existing.get("fingerprint") == fingerprint and not extra:
            return {**existing, "reused": True}  # up to date: these rows, packed with these options
        if occupied(out_dir) and not overwrite:
            raise DataError(f"{out_dir} already exists"
                            + (" and was packed from other rows or options" if existing else "")
                            + ". Choose another output folder or pass --overwrite.")
    rows = _Rows(tokenized)
    lengths = rows.lengths
    plan = plan_packs(lengths, context_length, overflow=overflow, seed=seed)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shards = _resume(partial, fingerprint)
    bounds = _shard_bounds(plan, shard_bytes)
    if progress:
        progress(sum(s["rows"] for s in shards), plan.num_packs)
    for number, (lo, hi) in enumerate(bounds[len(shards):], start=len(shards)):
        shards.append(_write_shard(partial / f"shard-{number:05d}.arrow", rows, plan, lo, hi, 8 << 20))
        write_atomic(partial / PROGRESS, json.dumps({"fingerprint": fingerprint, "shards": shards}, indent=1))
        if progress:
            progress(hi - lo, plan.num_packs)
    manifest = _manifest(tokenized_dir, provenance, plan, lengths, shards, options, fingerprint, extra or {})
    write_atomic(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (partial / PROGRESS).unlink(missing_ok=True)
    os.chmod(partial, 0o755)
    replace_dir(partial, out_dir)
    return manifest


def _inputs(provenance: Provenance, options: dict) -> dict:
    return provenance.inputs(context_length=options["context_length"], overflow=options["overflow"],
                             seed=options["seed"])


def _manifest(tokenized_dir: Path, provenance: Provenance, plan: Plan, lengths: np.ndarray, shards: list[dict],
              options: dict, fingerprint: str, extra: dict) -> dict:
    return {
        "format": PACKED_FORMAT,  # no timestamp: the same inputs and options give a byte-identical folder
        "tokenized": {"path": str(tokenized_dir.resolve()), "manifest_sha256": sha256_file(tokenized_dir / MANIFEST)},
        **provenance.described(),
        "packing": options,
        "inputs": _inputs(provenance, options),
        "fingerprint": fingerprint,
        "stats": _stats(plan, lengths, shards),
        **extra,
        "columns": COLUMNS,
        "shards": shards,
    }


def _stats(plan: Plan, lengths: np.ndarray, shards: list[dict]) -> dict:
    capacity = plan.num_packs * plan.context_length
    dropped = {reason: int(idx.size) for reason, idx in sorted(plan.dropped.items())}
    return {
        "samples": int(lengths.size),
        "packed_samples": int(np.unique(plan.sample).size),
        "pieces": int(plan.sample.size),
        "packs": plan.num_packs,
        "tokens": plan.tokens,
        "capacity": capacity,
        "padding": capacity - plan.tokens,
        "efficiency": round(plan.efficiency, 6),
        "trained_tokens": sum(s["trained_tokens"] for s in shards),
        # what the loss is computed on: trained tokens that are not the first of a sample
        "label_tokens": sum(s["label_tokens"] for s in shards),
        "dropped": dropped,
        "dropped_samples": sum(dropped.values()),
        "dropped_tokens": int(sum(lengths[idx].sum() for idx in plan.dropped.values())),
        "truncated": plan.truncated,
        "truncated_tokens": plan.truncated_tokens,
        "split": plan.split,
        "samples_per_pack": round(plan.sample.size / plan.num_packs, 2) if plan.num_packs else 0,
    }


def open_folder(folder: str | Path) -> PackedDataset | TokenizedDataset:
    """A ``tforge pack`` folder as a :class:`PackedDataset`, a ``tforge tokenize`` one as a
    :class:`~template_forge.data.tokenized.TokenizedDataset` (by the manifest's format)."""
    kind = read_manifest(folder).get("format")
    return PackedDataset(folder) if kind == PACKED_FORMAT else TokenizedDataset(folder)
