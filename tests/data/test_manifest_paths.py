"""Shard names read from a manifest (tokenized, packed) or a progress file are plain names
inside the folder: `..`, absolute paths, separators and symlinks out of the folder are refused
with a DataError that names the file and the field, and nothing outside is opened."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_packed import random_rows, record_writes, rerecord, write_tokenized

from template_forge.cli import main
from template_forge.data import tokenized
from template_forge.data.packed import PackedDataset, open_folder, pack_tokenized
from template_forge.data.provenance import MANIFEST, check_shard_entries, read_manifest, verify_shards
from template_forge.data.tokenized import TokenizedDataset
from template_forge.errors import DataError

EXAMPLES = int(os.environ.get("TFORGE_EXAMPLES", 100))
BAD_NAMES = ["../outside.arrow", "/etc/passwd", "sub/shard.arrow", "sub\\shard.arrow", "..", ".", "", ".hidden",
             "shard\x00.arrow", "shard\n.arrow", "x" * 256, 7, None, ["shard-00000.arrow"]]


@pytest.fixture
def folders(tmp_path):
    write_tokenized(tmp_path / "tok", random_rows([10, 20, 30, 40]), shard_bytes=200)
    pack_tokenized(tmp_path / "tok", tmp_path / "packed", context_length=64)
    return tmp_path / "tok", tmp_path / "packed"


def _point_first_shard_at(folder, name) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["shards"][0]["file"] = name
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _outside_copy(folder):
    """A valid copy of the folder's first shard one level up, with the manifest's size and sha256."""
    shutil.copy(folder / "shard-00000.arrow", folder.parent / "outside.arrow")
    return folder.parent / "outside.arrow"


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_shard_name_that_leaves_the_folder_is_refused_everywhere(folders, name):
    tok, packed = folders
    _outside_copy(tok)
    for folder in folders:
        _point_first_shard_at(folder, name)
    where = r"manifest\.json: `shards\[0\]\.file` is .*; expected a plain file name inside the folder"
    for read in (lambda: TokenizedDataset(tok), lambda: PackedDataset(packed), lambda: open_folder(packed),
                 lambda: read_manifest(tok), lambda: pack_tokenized(tok, tok.parent / "again", context_length=64)):
        with pytest.raises(DataError, match=where):
            read()
    assert not (tok.parent / "again").exists()
    result = CliRunner().invoke(main, ["stats", str(packed), "--verify"])
    assert result.exit_code == 1 and "`shards[0].file`" in result.output and "Traceback" not in result.output


def test_a_manifest_pointing_at_a_valid_shard_outside_is_refused_before_it_is_opened(folders, monkeypatch):
    tok, packed = folders
    outside = _outside_copy(tok)
    _point_first_shard_at(tok, "../outside.arrow")
    opened = []
    real_open = tokenized.open_arrow
    monkeypatch.setattr(tokenized, "open_arrow", lambda path: opened.append(str(path)) or real_open(path))
    with pytest.raises(DataError, match=r"`shards\[0\]\.file` is '\.\./outside\.arrow'"):
        TokenizedDataset(tok)
    assert opened == [] and outside.is_file()


def test_a_shard_that_is_a_symlink_out_of_the_folder_is_refused(folders):
    tok, packed = folders
    for folder in folders:
        outside = _outside_copy(folder)
        (folder / "shard-00000.arrow").unlink()
        (folder / "shard-00000.arrow").symlink_to(outside)
        with pytest.raises(DataError, match=r"shard shard-00000.arrow is a symlink to .*outside.arrow, outside "):
            open_folder(folder)
        with pytest.raises(DataError, match="is a symlink to"):
            verify_shards(folder, read_manifest(folder))


def test_a_symlink_inside_the_folder_is_allowed(folders):
    tok, _ = folders
    shutil.copy(tok / "shard-00000.arrow", tok / "copy.arrow")
    (tok / "shard-00000.arrow").unlink()
    (tok / "shard-00000.arrow").symlink_to("copy.arrow")
    assert len(TokenizedDataset(tok)) == 4


def test_a_progress_file_naming_a_shard_outside_is_refused(folders, monkeypatch):
    tok, _ = folders
    out = tok.parent / "out"
    record_writes(monkeypatch, crash_after=0)
    with pytest.raises(KeyboardInterrupt):
        pack_tokenized(tok, out, context_length=64, shard_bytes=10)
    record_writes(monkeypatch)
    partial = tok.parent / ".out.partial"
    fingerprint = pack_tokenized(tok, tok.parent / "whole", context_length=64, shard_bytes=10)["fingerprint"]
    outside = _outside_copy(tok.parent / "whole")
    entry = {"file": "../outside.arrow", "rows": 1, "bytes": outside.stat().st_size,
             "sha256": hashlib.sha256(outside.read_bytes()).hexdigest()}
    (partial / "progress.json").write_text(json.dumps({"fingerprint": fingerprint, "shards": [entry]}))
    with pytest.raises(DataError, match=r"\.out\.partial/progress\.json: `shards\[0\]\.file` is '\.\./outside"):
        pack_tokenized(tok, out, context_length=64, shard_bytes=10)
    assert not out.exists() and outside.is_file()


@pytest.mark.parametrize("field, value, expected", [
    ("rows", -1, "an integer ≥ 0"), ("bytes", "12", "an integer ≥ 0"), ("bytes", True, "an integer ≥ 0"),
    ("sha256", "ab", "64 lowercase hex digits"), ("sha256", None, "64 lowercase hex digits"),
])
def test_other_shard_fields_are_checked_too(folders, field, value, expected):
    tok, _ = folders
    manifest = json.loads((tok / MANIFEST).read_text())
    manifest["shards"][1][field] = value
    (tok / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"`shards\[1\]\.{field}` is .*; expected {expected}"):
        TokenizedDataset(tok)


@pytest.mark.parametrize("shards_value", [None, {"file": "x"}, ["shard-00000.arrow"]], ids=repr)
def test_a_shards_entry_of_the_wrong_shape_is_refused(folders, shards_value):
    tok, _ = folders
    manifest = json.loads((tok / MANIFEST).read_text())
    manifest["shards"] = shards_value
    (tok / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: `shards(\[0\])?` must be"):
        TokenizedDataset(tok)


def test_hostile_manifest_files_end_in_a_data_error(folders):
    tok, packed = folders
    (tok / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="unreadable manifest \\(nested too deeply\\)"):
        TokenizedDataset(tok)
    (tok / MANIFEST).write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="unreadable manifest"):
        TokenizedDataset(tok)
    with open(tok / MANIFEST, "wb") as fh:
        fh.truncate((64 << 20) + 1)  # sparse: no 64 MB written
    with pytest.raises(DataError, match="more than a manifest can be"):
        TokenizedDataset(tok)
    (packed / "shard-00000.arrow").write_bytes(b"not arrow at all")
    rerecord(packed)
    with pytest.raises(DataError, match="shard-00000.arrow: not a readable Arrow IPC shard"):
        PackedDataset(packed)
    manifest = json.loads((packed / MANIFEST).read_text())
    manifest["packing"] = {"context_length": "64"}
    (packed / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"`packing.context_length` is '64'; expected an integer ≥ 1"):
        PackedDataset(packed)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TFORGE_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=12), st.sampled_from(["..", "../a", "a/..", "/a", "a/b", "./a", "a\\..", "~"])))
def test_a_name_is_accepted_only_if_it_stays_in_the_folder(tmp_path, name):
    entry = {"file": name, "rows": 0, "bytes": 0, "sha256": "0" * 64}
    try:
        check_shard_entries([entry], where="m.json")
    except DataError as exc:
        assert "`shards[0].file`" in str(exc)
        return
    folder = str(tmp_path)
    assert os.path.dirname(os.path.normpath(os.path.join(folder, name))) == folder
    assert os.path.basename(name) == name and name not in ("", ".", "..")
