"""Packed Arrow shards: nothing lost or invented end to end, byte-identical reruns, resume
after an interruption, zero-copy reads, and shards that other readers open."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.data import pack_writer
from template_forge.data import packed as shards
from template_forge.data.packed import PackedDataset, pack_tokenized
from template_forge.data.provenance import MANIFEST, PACKED_FORMAT, TOKENIZED_FORMAT, read_manifest
from template_forge.data.tokenized import ShardWriter
from template_forge.errors import DataError
from template_forge.tokens.encoder import Encoded


def write_tokenized(folder, rows: list[Encoded], *, batch_rows: int = 3, shard_bytes: int = 1 << 20) -> None:
    """A `tforge tokenize`-shaped folder holding ``rows`` (line k + 1 for row k)."""
    os.makedirs(folder, exist_ok=True)
    writer = ShardWriter(folder, batch_rows=batch_rows, shard_bytes=shard_bytes)
    for k, row in enumerate(rows):
        writer.add(row, k + 1)
    manifest = {"format": TOKENIZED_FORMAT, "source": {"path": "x.jsonl", "sha256": "s" * 64},
                "spec": {"name": "chatml", "sha256": "p" * 64}, "tokenizer": {"sha256": "t" * 64},
                "policy": "assistant", "parse_special": False, "max_length": None, "overlong": "drop",
                "on_error": "stop", "counts": {"written": len(rows)}, "shards": writer.close()}
    with open(os.path.join(folder, MANIFEST), "w") as fh:
        json.dump(manifest, fh)


def rerecord(folder) -> None:
    """Record the shards' present sizes and sha256 in the manifest (a folder another version wrote)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for shard in manifest["shards"]:
        data = (folder / shard["file"]).read_bytes()
        shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / MANIFEST).write_text(json.dumps(manifest))


def record_writes(monkeypatch, *, crash_after: int | None = None, leave_half: bool = False) -> list[str]:
    """Record the name of every shard ``pack_tokenized`` writes; with ``crash_after``, raise
    KeyboardInterrupt instead of writing the next one (leaving half of it with ``leave_half``)."""
    real, written = pack_writer.write_shard, []  # the real one, whatever was patched before

    def write(path, *args):
        if len(written) == crash_after:
            if leave_half:
                path.with_name(path.name + ".tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        written.append(path.name)
        return real(path, *args)

    monkeypatch.setattr(shards, "write_shard", write)
    return written


def random_rows(lengths, seed=0) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    return [Encoded(rng.integers(0, 50_000, n).astype(np.int32), rng.integers(0, 2, n).astype(np.uint8))
            for n in lengths]


def read_back(folder) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Every packed piece, by source line; checks each pack's own invariants on the way."""
    ds = PackedDataset(folder)
    found: dict[int, list] = {}
    for k in range(len(ds)):
        pack = ds[k]
        assert pack.num_tokens <= ds.context_length
        assert int(pack.seq_lengths.sum()) == pack.num_tokens == len(pack.loss_mask)
        lines, starts = ds.sources(k)
        for line, start, (ids, mask) in zip(lines, starts, pack.samples(), strict=True):
            found.setdefault(line, []).append((start, ids, mask))
    return {line: [p[1:] for p in sorted(pieces, key=lambda p: p[0])] for line, pieces in found.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(4, 32),
       st.sampled_from(["drop", "truncate", "split"]), st.integers(0, 2))
def test_tokens_and_masks_survive_packing_unchanged(tmp_path_factory, lengths, capacity, overflow, seed):
    tmp = tmp_path_factory.mktemp("conserve")
    rows = random_rows(lengths, seed)
    write_tokenized(tmp / "tok", rows)
    manifest = pack_tokenized(tmp / "tok", tmp / "packed", context_length=capacity, overflow=overflow, seed=seed,
                              shard_bytes=200)
    found = read_back(tmp / "packed")
    for k, row in enumerate(rows):
        pieces = found.pop(k + 1, [])
        if row.num_tokens > capacity and overflow == "drop":
            assert pieces == []
            continue
        ids = np.concatenate([p[0] for p in pieces])
        mask = np.concatenate([p[1] for p in pieces])
        keep = row.num_tokens if overflow == "split" else min(row.num_tokens, capacity)
        assert ids.tolist() == row.input_ids[:keep].tolist()
        assert mask.tolist() == row.loss_mask[:keep].tolist()
    assert not found  # nothing invented
    s = manifest["stats"]
    assert s["tokens"] == sum(PackedDataset(tmp / "packed").num_tokens)
    assert s["padding"] == s["packs"] * capacity - s["tokens"]
    assert s["trained_tokens"] == sum(int(p.loss_mask.sum()) for p in PackedDataset(tmp / "packed"))
    assert s["label_tokens"] == sum(int((p.labels != -100).sum()) for p in PackedDataset(tmp / "packed"))
    assert s["dropped_samples"] == (sum(n > capacity for n in lengths) if overflow == "drop" else 0)


def test_same_inputs_and_seed_give_byte_identical_shards(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows(np.random.default_rng(3).integers(1, 90, 200)))
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        pack_tokenized(tmp_path / "tok", tmp_path / name, context_length=128, seed=seed, shard_bytes=4096)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) > 3 and "manifest.json" in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "shard-00000.arrow").read_bytes() != (tmp_path / "c" / "shard-00000.arrow").read_bytes()


def test_shards_are_bounded_in_size(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([50] * 100))
    manifest = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=100, shard_bytes=3000)
    assert len(manifest["shards"]) > 5
    # every shard but possibly the last stays within its budget (plus the file's own framing)
    assert all(s["bytes"] < 3000 + 2000 for s in manifest["shards"])
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["stats"]["packs"] == 50


def test_reads_are_zero_copy_views_of_the_mapped_file(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10, 20, 30]))
    pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    ds = PackedDataset(tmp_path / "p")
    first, again = ds[0], ds[0]
    for arr in (first.input_ids, first.loss_mask, first.seq_lengths):
        assert not arr.flags.owndata and not arr.flags.writeable
    assert np.shares_memory(first.input_ids, again.input_ids)  # same mapped bytes, not two copies
    assert first.input_ids.dtype == np.int32 and first.loss_mask.dtype == np.uint8


def test_plain_pyarrow_and_datasets_open_a_shard(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = random_rows([5, 7, 9])
    write_tokenized(tmp_path / "tok", rows)
    pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=32)
    shard = str(tmp_path / "p" / "shard-00000.arrow")
    table = pa.ipc.open_stream(pa.memory_map(shard)).read_all()
    assert table.column_names == shards.COLUMNS
    ds = datasets.Dataset.from_file(shard)
    assert ds[0]["input_ids"] == table.column("input_ids")[0].as_py()
    assert sorted(ds[0]["seq_lengths"]) == [5, 7, 9] and ds[0]["num_tokens"] == 21


def test_an_interrupted_run_leaves_no_manifest_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    write_tokenized(tmp_path / "tok", random_rows(np.random.default_rng(5).integers(1, 60, 120)))
    pack_tokenized(tmp_path / "tok", tmp_path / "whole", context_length=64, shard_bytes=2048)
    record_writes(monkeypatch, crash_after=2, leave_half=True)
    with pytest.raises(KeyboardInterrupt):
        pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=2048)
    assert not (tmp_path / "out").exists()
    partial = tmp_path / ".out.partial"
    assert not (partial / MANIFEST).exists()
    assert len(json.loads((partial / "progress.json").read_text())["shards"]) == 2
    with pytest.raises(DataError, match="rerun the same command to resume"):
        read_manifest(tmp_path / "out")

    written = record_writes(monkeypatch)
    pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=2048)
    assert written[0] == "shard-00002.arrow"  # the two finished shards were kept
    assert not partial.exists()
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert whole == sorted(p.name for p in (tmp_path / "out").iterdir())
    for name in whole:
        if name.endswith(".arrow"):
            assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    assert read_manifest(tmp_path / "whole")["shards"] == read_manifest(tmp_path / "out")["shards"]


def test_a_partial_run_of_other_options_is_started_over(tmp_path, monkeypatch):
    write_tokenized(tmp_path / "tok", random_rows([30] * 40))
    record_writes(monkeypatch, crash_after=1)
    with pytest.raises(KeyboardInterrupt):
        pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=500)
    calls = record_writes(monkeypatch)
    pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=500, seed=1)
    assert calls[0] == "shard-00000.arrow"
    assert PackedDataset(tmp_path / "out").manifest["packing"]["seed"] == 1


def test_manifest_records_provenance_and_statistics(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10, 200, 30, 0 + 5]))
    m = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64, overflow="drop", seed=3)
    assert m["format"] == PACKED_FORMAT
    assert m["source"]["sha256"] == "s" * 64 and m["tokenizer"]["sha256"] == "t" * 64
    assert m["inputs"]["context_length"] == 64 and m["inputs"]["seed"] == 3 and m["inputs"]["spec_sha256"] == "p" * 64
    s = m["stats"]
    assert s["dropped"] == {"too_long": 1} and s["dropped_tokens"] == 200
    assert s["samples"] == 4 and s["packed_samples"] == 3 and s["tokens"] == 45 and s["packs"] == 1
    assert s["efficiency"] == pytest.approx(45 / 64, abs=1e-6)


def test_verify_detects_a_modified_shard(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10, 20]))
    pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    ds = PackedDataset(tmp_path / "p")
    ds.verify()
    shard = tmp_path / "p" / "shard-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[-200] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="contents differ from the manifest's sha256"):
        PackedDataset(tmp_path / "p").verify()


def test_an_up_to_date_folder_is_reused_and_a_stale_one_refused(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10, 30]))
    first = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    mtime = (tmp_path / "p" / MANIFEST).stat().st_mtime_ns
    again = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    assert again["reused"] and again["fingerprint"] == first["fingerprint"]
    assert (tmp_path / "p" / MANIFEST).stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="already exists and was packed from other rows or options.*--overwrite"):
        pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=32)
    write_tokenized(tmp_path / "tok", random_rows([10, 30], seed=9))  # same lengths, other tokens
    with pytest.raises(DataError, match="packed from other rows or options"):
        pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    assert not pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64, overwrite=True).get("reused")


def test_errors_name_the_folder_and_the_fix(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10]))
    pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(DataError, match="other already exists. Choose another output folder or pass --overwrite"):
        pack_tokenized(tmp_path / "tok", tmp_path / "other", context_length=64)
    with pytest.raises(DataError, match="expected 'tforge.tokenized/1'"):
        pack_tokenized(tmp_path / "p", tmp_path / "q", context_length=64)
    with pytest.raises(DataError, match="Pack it first with `tforge pack`"):
        PackedDataset(tmp_path / "tok")
    with pytest.raises(DataError, match="no manifest.json"):
        PackedDataset(tmp_path)
    shutil.copytree(tmp_path / "p", tmp_path / "broken")
    (tmp_path / "broken" / "shard-00000.arrow").unlink()
    with pytest.raises(DataError, match=r"shard shard-00000.arrow is missing \(listed in manifest.json\)"):
        PackedDataset(tmp_path / "broken")
    old = tmp_path / "broken" / "shard-00000.arrow"
    table = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "p" / "shard-00000.arrow"))).read_all()
    with pa.OSFile(str(old), "wb") as sink, pa.ipc.new_stream(sink, table.schema.remove(5)) as w:
        w.write_table(table.drop_columns(["source_starts"]))
    rerecord(tmp_path / "broken")  # as that version recorded it
    with pytest.raises(DataError, match="no column source_starts; this folder was made by another version"):
        PackedDataset(tmp_path / "broken")
    with pytest.raises(IndexError, match="has 1 packs"):
        PackedDataset(tmp_path / "p")[5]


def test_shards_in_the_ipc_file_format_are_read_too(tmp_path):
    """Folders written before the switch to the IPC stream format (which datasets needs) still open."""
    rows = random_rows([4, 9, 6])
    write_tokenized(tmp_path / "tok", rows, batch_rows=2)
    pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=16)
    for folder in (tmp_path / "tok", tmp_path / "p"):
        for shard in folder.glob("*.arrow"):
            table = pa.ipc.open_stream(pa.py_buffer(shard.read_bytes())).read_all()  # a copy: the file is rewritten
            with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            assert shard.read_bytes()[:6] == b"ARROW1"
        rerecord(folder)  # as the version that wrote the IPC file format recorded them
    from template_forge.data.tokenized import TokenizedDataset

    assert [r.input_ids.tolist() for r in TokenizedDataset(tmp_path / "tok")] == [r.input_ids.tolist() for r in rows]
    packed = PackedDataset(tmp_path / "p")
    assert sorted(np.concatenate([p.input_ids for p in packed]).tolist()) == sorted(
        np.concatenate([r.input_ids for r in rows]).tolist())
