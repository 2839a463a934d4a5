"""Writing packed shards: the Arrow schema, the gathering of pieces, one shard at a time, and
the manifest of a packed folder (:mod:`template_forge.data.packed` runs the whole write,
resumes it and decides what is up to date).

One row per pack. Columns: ``input_ids`` (``list<int32>``), ``loss_mask`` (``list<uint8>``;
Arrow booleans are bit-packed and cannot be viewed from numpy), ``seq_lengths``
(``list<int32>``, the samples inside the pack), ``num_tokens`` (``int32``),
``source_lines`` (``list<int64>``, the JSONL line of each sample) and ``source_starts``
(``list<int32>``, where each piece starts in its sample: 0 unless a long sample was split).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from template_forge.data.arrow_arrays import array, list_array, view
from template_forge.data.packing import Plan
from template_forge.data.provenance import MANIFEST, PACKED_FORMAT, HashingFile, Provenance, sha256_file
from template_forge.data.tokenized import TokenizedDataset
from template_forge.errors import DataError

COLUMNS = ["input_ids", "loss_mask", "seq_lengths", "num_tokens", "source_lines", "source_starts"]


def schema():
    import pyarrow as pa

    return pa.schema([
        ("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.uint8())),
        ("seq_lengths", pa.list_(pa.int32())), ("num_tokens", pa.int32()), ("source_lines", pa.list_(pa.int64())),
        ("source_starts", pa.list_(pa.int32())),
    ])





class Rows:
    """The tokenized rows, as zero-copy arrays per record batch, for gathering pieces."""

    def __init__(self, ds: TokenizedDataset):
        self.ids: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        chunk, start, lines, lengths = [], [], [], []
        for table in ds._tables:
            for batch in table.to_batches():
                ids, mask = batch.column("input_ids"), batch.column("loss_mask")
                offsets = view(ids.offsets)
                if not np.array_equal(offsets, view(mask.offsets)):
                    raise DataError(f"{ds.folder}: input_ids and loss_mask rows differ in length; re-tokenize.")
                self.ids.append(view(ids.values))
                self.mask.append(view(mask.values))
                chunk.append(np.full(len(offsets) - 1, len(self.ids) - 1, dtype=np.int64))
                start.append(offsets[:-1].astype(np.int64))
                lengths.append(np.diff(offsets).astype(np.int64))
                lines.append(view(batch.column("line")))
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


def shard_bounds(plan: Plan, shard_bytes: int) -> list[tuple[int, int]]:
    """Consecutive pack ranges of about ``shard_bytes`` each (at least one pack per shard)."""
    pieces = np.diff(plan.pack_offsets)
    cum = np.concatenate([[0], np.cumsum(plan.pack_lengths * 5 + pieces * 12 + 16)])
    bounds, a = [], 0
    while a < plan.num_packs:
        z = max(a + 1, int(np.searchsorted(cum, cum[a] + shard_bytes, side="right")) - 1)
        bounds.append((a, z))
        a = z
    return bounds


def write_shard(path: Path, rows: Rows, plan: Plan, lo: int, hi: int, batch_tokens: int) -> dict:
    """Write packs ``lo:hi`` to ``path`` through ``path.tmp`` and a rename; returns its manifest entry."""
    import pyarrow as pa

    tmp = path.with_name(path.name + ".tmp")
    trained = first_trained = 0
    with open(tmp, "wb") as fh, pa.PythonFile(hashing := HashingFile(fh), mode="w") as sink, \
            pa.ipc.new_stream(sink, schema()) as writer:
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
                list_array(tok_off, ids), list_array(tok_off, mask),
                list_array(pieces, length.astype(np.int32)), array(np.diff(tok_off)),
                list_array(pieces, rows.lines[sample]), list_array(pieces, start.astype(np.int32)),
            ], schema=schema()))
            a = z
        writer.close()
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return {"file": path.name, "rows": hi - lo, "bytes": path.stat().st_size, "sha256": hashing.digest.hexdigest(),
            "trained_tokens": trained, "label_tokens": trained - first_trained}


def pack_inputs(provenance: Provenance, options: dict) -> dict:
    return provenance.inputs(context_length=options["context_length"], overflow=options["overflow"],
                             seed=options["seed"])


def pack_manifest(tokenized_dir: Path, provenance: Provenance, plan: Plan, lengths: np.ndarray, shards: list[dict],
              options: dict, fingerprint: str, extra: dict) -> dict:
    return {
        "format": PACKED_FORMAT,  # no timestamp: the same inputs and options give a byte-identical folder
        "tokenized": {"path": str(tokenized_dir.resolve()), "manifest_sha256": sha256_file(tokenized_dir / MANIFEST)},
        **provenance.described(),
        "packing": options,
        "inputs": pack_inputs(provenance, options),
        "fingerprint": fingerprint,
        "stats": pack_stats(plan, lengths, shards),
        **extra,
        "columns": COLUMNS,
        "shards": shards,
    }


def pack_stats(plan: Plan, lengths: np.ndarray, shards: list[dict]) -> dict:
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
