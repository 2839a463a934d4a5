""""Up to date" means the shards are there and match the manifest: a damaged output of the same
inputs is made again, never reused; resumed and intermediate shards are checked the same way."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_packed import random_rows, record_writes, write_tokenized

from template_forge.cli import main
from template_forge.data import prepare
from template_forge.data.packed import PackedDataset, pack_tokenized
from template_forge.data.provenance import MANIFEST
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _zero(path):
    path.write_bytes(b"")


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


DAMAGE = {"emptied": (_zero, "has 0 bytes, the manifest says"),
          "flipped": (_flip, "contents differ from the manifest's sha256"),
          "removed": (lambda p: p.unlink(), "is missing")}


@pytest.mark.parametrize("damage", DAMAGE)
def test_pack_makes_a_damaged_up_to_date_folder_again(tmp_path, damage):
    write_tokenized(tmp_path / "tok", random_rows([30] * 60))
    first = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64, shard_bytes=500)
    want = _files(tmp_path / "p")
    harm, said = DAMAGE[damage]
    harm(tmp_path / "p" / "shard-00002.arrow")
    again = pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64, shard_bytes=500)
    assert not again.get("reused") and again["rebuilt"].startswith("shard-00002.arrow") and said in again["rebuilt"]
    assert _files(tmp_path / "p") == want and again["fingerprint"] == first["fingerprint"]
    PackedDataset(tmp_path / "p").verify()
    assert pack_tokenized(tmp_path / "tok", tmp_path / "p", context_length=64, shard_bytes=500)["reused"]


def test_a_resumed_run_rewrites_a_finished_shard_that_no_longer_matches(tmp_path, monkeypatch):
    write_tokenized(tmp_path / "tok", random_rows([30] * 60))
    pack_tokenized(tmp_path / "tok", tmp_path / "whole", context_length=64, shard_bytes=500)
    record_writes(monkeypatch, crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=500)
    _flip(tmp_path / ".out.partial" / "shard-00001.arrow")  # same size, other bytes
    written = record_writes(monkeypatch)
    pack_tokenized(tmp_path / "tok", tmp_path / "out", context_length=64, shard_bytes=500)
    assert written[0] == "shard-00001.arrow"  # shard 0 kept, 1 and after written again
    assert _files(tmp_path / "out") == _files(tmp_path / "whole")


@pytest.fixture
def llama3(real_tokenizer):
    return Encoder(load_builtin("llama3"), real_tokenizer("llama3"))


def _conversations(path, n=40):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i} " * (i % 7 + 1)},
                                                     {"role": "assistant", "content": f"Hello {i}"}]}) + "\n"
                            for i in range(n)))
    return path


def test_prepare_makes_a_damaged_up_to_date_folder_again_and_says_so(tmp_path, real_tokenizer):
    data, tok = _conversations(tmp_path / "d.jsonl"), str(real_tokenizer("llama3"))
    args = ["prepare", str(data), "-f", "llama3", "-t", tok, "-n", "64", "-o", str(tmp_path / "p"), "--workers", "1"]
    assert CliRunner().invoke(main, args).exit_code == 0
    want = _files(tmp_path / "p")
    _zero(tmp_path / "p" / "shard-00000.arrow")
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "is up to date" not in again.output
    assert "warning: " in again.output and "shard-00000.arrow has 0 bytes, the manifest says" in again.output
    assert _files(tmp_path / "p") == want
    assert "is up to date" in CliRunner().invoke(main, args).output


def test_prepare_tokenizes_again_when_the_intermediate_folder_is_damaged(tmp_path, llama3, monkeypatch):
    data = _conversations(tmp_path / "d.jsonl")
    real_tokenize = prepare._tokenize
    calls: list[int] = []
    monkeypatch.setattr(prepare, "_tokenize", lambda *a, **k: calls.append(1) or real_tokenize(*a, **k))
    record_writes(monkeypatch, crash_after=0)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_file(data, llama3, tmp_path / "p", context_length=64, workers=1)
    work = tmp_path / ".p.tokenized"
    assert (work / MANIFEST).is_file() and calls == [1]
    _flip(work / "shard-00000.arrow")
    record_writes(monkeypatch)
    manifest, reused = prepare.prepare_file(data, llama3, tmp_path / "p", context_length=64, workers=1)
    assert not reused and calls == [1, 1]  # the damaged rows were not packed
    PackedDataset(tmp_path / "p").verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "p"]


def test_prepare_clears_an_intermediate_folder_a_killed_run_did_not_finish_removing(tmp_path, llama3):
    data = _conversations(tmp_path / "d.jsonl")
    prepare.prepare_file(data, llama3, tmp_path / "p", context_length=64, workers=1)
    (tmp_path / ".p.tokenized").mkdir()
    (tmp_path / ".p.tokenized" / "shard-00003.arrow").write_bytes(b"half removed")
    (tmp_path / "..p.tokenized.abcd1234.tmp").mkdir()
    _, reused = prepare.prepare_file(data, llama3, tmp_path / "p", context_length=64, workers=1)
    assert reused and sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "p"]
