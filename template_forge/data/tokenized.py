"""Tokenized conversations on disk: Arrow IPC shards, one row per conversation, plus
``manifest.json``.

Columns: ``input_ids`` (``list<int32>``), ``loss_mask`` (``list<uint8>``), ``num_tokens``
and ``num_trained`` (``int32``), ``line`` (``int64``, the 1-based line of the source file).
Shards are uncompressed Arrow IPC streams (:func:`open_arrow`), memory-mapped and read
without copying by plain pyarrow and by ``datasets.Dataset.from_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from template_forge.data.arrow_arrays import array, list_array, view
from template_forge.data.provenance import MANIFEST, TOKENIZED_FORMAT, HashingFile, read_manifest, shard_problem
from template_forge.errors import DataError
from template_forge.tokens.encoder import Encoded


def open_arrow(path: str | Path):
    """Memory-map an Arrow IPC file and return its table; buffers are views of the mapping.

    Shards are written in the IPC *stream* format because that is the one
    ``datasets.Dataset.from_file`` reads (it calls ``pyarrow.ipc.open_stream``); a
    memory-mapped stream is read just as zero-copy as the IPC file format, which is also
    accepted here.
    """
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path), "r")
        if source.read(6) == b"ARROW1":  # the IPC file format's magic
            source.seek(0)
            return pa.ipc.open_file(source).read_all()
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowException) as exc:  # ArrowInvalid is also a ValueError: not a user's bug
        raise DataError(f"{path}: not a readable Arrow IPC shard ({exc}). The folder is damaged; "
                        "make it again.") from None


def open_shards(folder: Path, manifest: dict, *, columns: list[str]) -> list:
    """Every shard a (checked) manifest of ``folder`` lists, opened with :func:`open_arrow`,
    after checking that each is a file of the folder of the size the manifest records (the
    sha256 is left to ``tforge stats --verify``: it costs a read of every shard) and has
    ``columns``."""
    tables = []
    where = folder / MANIFEST
    for shard in manifest["shards"]:
        problem = shard_problem(folder, shard, where=where, hashes=False)
        if problem:
            raise DataError(f"{folder}: shard {problem} (listed in {MANIFEST}). The folder was modified "
                            "after it was written; make it again.")
        table = open_arrow(folder / shard["file"])
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(f"{folder / shard['file']}: no column {', '.join(missing)}; this folder was made by "
                            "another version of tforge, or is damaged. Make it again.")
        tables.append(table)
    return tables


COLUMNS = ["input_ids", "loss_mask", "num_tokens", "num_trained", "line"]


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.uint8())),
        ("num_tokens", pa.int32()), ("num_trained", pa.int32()), ("line", pa.int64()),
    ])


class ShardWriter:
    """Writes rows into ``shard-00000.arrow``, ``shard-00001.arrow``… of at most
    ``shard_bytes`` each (a shard holds at least one row), in record batches of ``batch_rows``."""

    def __init__(self, folder: Path, *, shard_bytes: int = 256 << 20, batch_rows: int = 1024):
        self.folder = Path(folder)
        self.shard_bytes = shard_bytes
        self.batch_rows = batch_rows
        self.shards: list[dict] = []
        self._rows: list[tuple[Encoded, int]] = []
        self._writer = None
        self._sink = None
        self._shard_rows = 0
        self._shard_size = 0

    def add(self, encoded: Encoded, line: int) -> None:
        size = encoded.num_tokens * 5 + 24
        if self._shard_size + size > self.shard_bytes and (self._shard_rows or self._rows):
            self._flush()
            self._close_shard()
        self._rows.append((encoded, line))
        self._shard_size += size
        if len(self._rows) >= self.batch_rows:
            self._flush()

    def _open_shard(self) -> None:
        import pyarrow as pa

        path = self.folder / f"shard-{len(self.shards):05d}.arrow"
        self._file = open(path, "wb")
        self._hashing = HashingFile(self._file)
        self._sink = pa.PythonFile(self._hashing, mode="w")
        self._writer = pa.ipc.new_stream(self._sink, _schema())
        self._shard_rows = 0
        self.shards.append({"file": path.name})

    def _flush(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa

        if self._writer is None:
            self._open_shard()
        counts = np.fromiter((e.num_tokens for e, _ in self._rows), dtype=np.int64, count=len(self._rows))
        offsets = np.zeros(len(self._rows) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        ids = np.concatenate([e.input_ids for e, _ in self._rows]).astype(np.int32, copy=False)
        mask = np.concatenate([e.loss_mask for e, _ in self._rows]).astype(np.uint8, copy=False)
        trained = np.fromiter((e.num_trained for e, _ in self._rows), dtype=np.int32, count=len(self._rows))
        lines = np.fromiter((line for _, line in self._rows), dtype=np.int64, count=len(self._rows))
        batch = pa.record_batch([
            list_array(offsets, ids), list_array(offsets, mask),
            array(counts.astype(np.int32)), array(trained), array(lines),
        ], schema=_schema())
        self._writer.write_batch(batch)
        self._shard_rows += len(self._rows)
        self._rows = []

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        self._file.close()
        path = self.folder / self.shards[-1]["file"]
        self.shards[-1].update(rows=self._shard_rows, bytes=path.stat().st_size,
                               sha256=self._hashing.digest.hexdigest())
        self._writer = None
        self._shard_size = 0

    def close(self) -> list[dict]:
        self._flush()
        self._close_shard()
        return self.shards


class TokenizedDataset:
    """Read a ``tforge tokenize`` output folder; rows are memory-mapped, not copied.

    ``ds[k]`` is an :class:`~template_forge.tokens.encoder.Encoded` whose arrays view the mapped file;
    ``ds.line(k)`` is the source line of row ``k``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, expect=TOKENIZED_FORMAT)
        self._tables = open_shards(self.folder, self.manifest, columns=COLUMNS)
        self._starts = np.cumsum([0] + [t.num_rows for t in self._tables])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_tokens(self) -> np.ndarray:
        """Tokens of every row (``int64``)."""
        cols = [view(t.column("num_tokens")) for t in self._tables]
        return np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)

    def _locate(self, k: int):
        if not -len(self) <= k < len(self):
            raise IndexError(f"row {k} out of range: this dataset has {len(self)} rows")
        k %= len(self)
        s = int(np.searchsorted(self._starts, k, side="right") - 1)
        return self._tables[s], k - int(self._starts[s])

    def __getitem__(self, k: int) -> Encoded:
        table, r = self._locate(k)
        return Encoded(_row(table.column("input_ids"), r), _row(table.column("loss_mask"), r))

    def line(self, k: int) -> int:
        table, r = self._locate(k)
        return int(table.column("line")[r].as_py())

    def __iter__(self) -> Iterator[Encoded]:
        for k in range(len(self)):
            yield self[k]


def _row(column, r: int) -> np.ndarray:
    """Row ``r`` of a list column as a read-only numpy view of the mapped file."""
    return view(column[r].values)
