"""`tforge pack | prepare | stats`, end to end with the real Llama 3 tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from template_forge.cli import main
from template_forge.data.packed import PackedDataset
from template_forge.data.provenance import read_manifest
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

from conftest import ROOT, write_conversations

EXAMPLE = ROOT / "examples" / "train.jsonl"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def tok(real_tokenizer):
    return str(real_tokenizer("llama3"))


@pytest.fixture
def data(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "<|eot_id|>", "é", "\n", "  "]
    return write_conversations(tmp_path / "d.jsonl", 60, words=words)


def _prepare(runner, data, tok, out, *extra):
    return runner.invoke(main, ["prepare", str(data), "-f", "llama3", "-t", tok, "-n", "256", "-o", str(out),
                                "--workers", "1", *extra])


def test_prepare_packs_exactly_what_encode_gives(runner, data, tok, tmp_path):
    out = tmp_path / "packed"
    result = _prepare(runner, data, tok, out, "--overflow", "split")
    assert result.exit_code == 0, result.output
    assert "60 samples →" in result.output and "efficiency" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no intermediate left behind
    encoder = Encoder(load_builtin("llama3"), tok)
    lines = data.read_text().splitlines()
    want = {k + 1: encoder.encode(json.loads(line)["messages"]) for k, line in enumerate(lines)}
    ds = PackedDataset(out)
    got: dict[int, list] = {}
    import pyarrow as pa

    for shard in ds.manifest["shards"]:
        table = pa.ipc.open_stream(pa.memory_map(str(out / shard["file"]))).read_all()
        for row in range(table.num_rows):
            ids = table.column("input_ids")[row].values.to_numpy()
            mask = table.column("loss_mask")[row].values.to_numpy()
            cuts = np.cumsum([0] + table.column("seq_lengths")[row].as_py())
            for line, start, a, b in zip(table.column("source_lines")[row].as_py(),
                                         table.column("source_starts")[row].as_py(), cuts[:-1], cuts[1:]):
                got.setdefault(line, []).append((start, ids[a:b], mask[a:b]))
    assert sorted(got) == sorted(want)
    for line, pieces in got.items():
        pieces.sort(key=lambda p: p[0])
        assert np.concatenate([p[1] for p in pieces]).tolist() == want[line].input_ids.tolist()
        assert np.concatenate([p[2] for p in pieces]).tolist() == want[line].loss_mask.tolist()
    m = ds.manifest
    assert m["tokenize"]["counts"]["written"] == 60
    assert m["stats"]["tokens"] == sum(e.num_tokens for e in want.values())
    assert m["inputs"]["tokenizer_sha256"] == encoder.vocab.sha256


def test_prepare_reuses_an_up_to_date_folder_and_refuses_a_stale_one(runner, data, tok, tmp_path):
    out = tmp_path / "packed"
    assert _prepare(runner, data, tok, out).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = _prepare(runner, data, tok, out)
    assert again.exit_code == 0 and "is up to date" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with open(data, "a") as fh:  # the data changed: the folder is stale
        fh.write(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    stale = _prepare(runner, data, tok, out)
    assert stale.exit_code == 1
    assert "prepared from other inputs (source_sha256 differ)" in stale.output and "--overwrite" in stale.output
    other = _prepare(runner, data, tok, out, "--seed", "3", "--overwrite")
    assert other.exit_code == 0 and read_manifest(out)["stats"]["samples"] == 61


def test_prepare_stops_at_a_bad_line_and_writes_nothing(runner, tok, tmp_path):
    out = tmp_path / "packed"
    result = runner.invoke(main, ["prepare", str(EXAMPLE), "-f", "llama3", "-t", tok, "-n", "512", "-o", str(out)])
    assert result.exit_code == 1
    assert f"{EXAMPLE}:6: message 0: unknown role 'human'" in result.output
    assert list(tmp_path.iterdir()) == []
    skipped = runner.invoke(main, ["prepare", str(EXAMPLE), "-f", "llama3", "-t", tok, "-n", "512", "-o", str(out),
                                   "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 of 9 lines: 1 unknown_role" in skipped.output
    assert read_manifest(out)["stats"]["packed_samples"] == 8


def test_pack_then_stats(runner, data, tok, tmp_path):
    tokenized, packed = tmp_path / "tok", tmp_path / "packed"
    assert runner.invoke(main, ["tokenize", str(data), "-f", "llama3", "-t", tok, "-o", str(tokenized),
                                "--workers", "1"]).exit_code == 0
    result = runner.invoke(main, ["pack", str(tokenized), "-n", "128", "-o", str(packed), "--overflow", "drop"])
    assert result.exit_code == 0, result.output
    m = read_manifest(packed)
    dropped = m["stats"]["dropped"].get("too_long", 0)
    assert dropped > 0 and f"dropped {dropped} ({dropped} too_long)" in result.output
    stats = runner.invoke(main, ["stats", str(packed), "--bins", "4"])
    assert stats.exit_code == 0, stats.output
    assert f"{m['stats']['efficiency']:.3%}" in stats.output
    assert "sample length (tokens)" in stats.output and "pack fill (tokens)" in stats.output
    bars = [line for line in stats.output.splitlines() if " – " in line]
    assert len(bars) == 8
    assert sum(int(line.split()[-1].replace(",", "")) for line in bars[:4]) == m["stats"]["pieces"]
    tok_stats = runner.invoke(main, ["stats", str(tokenized), "--verify"])
    assert tok_stats.exit_code == 0 and "conversations   60" in tok_stats.output
    assert "verified: 1 shards match" in tok_stats.output
    shard = packed / "shard-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-8] + b"tampered")
    tampered = runner.invoke(main, ["stats", str(packed), "--verify"])
    assert tampered.exit_code == 1 and "contents differ from the manifest's sha256" in tampered.output


def test_stats_png(runner, data, tok, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "packed"
    assert _prepare(runner, data, tok, out).exit_code == 0
    png = tmp_path / "h.png"
    result = runner.invoke(main, ["stats", str(out), "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pack_refuses_a_packed_folder_with_a_hint(runner, data, tok, tmp_path):
    out = tmp_path / "packed"
    assert _prepare(runner, data, tok, out).exit_code == 0
    result = runner.invoke(main, ["pack", str(out), "-n", "128", "-o", str(tmp_path / "again")])
    assert result.exit_code == 1
    assert "format 'tforge.packed/1', expected 'tforge.tokenized/1'" in result.output


def test_inspect_a_pack_shows_each_sample_and_its_line(runner, data, tok, tmp_path):
    out = tmp_path / "packed"
    assert _prepare(runner, data, tok, out, "--overflow", "split").exit_code == 0
    ds = PackedDataset(out)
    k = int(np.argmax([len(ds[i].seq_lengths) for i in range(len(ds))]))
    lines, _ = ds.sources(k)
    result = runner.invoke(main, ["inspect", str(out), "--row", str(k), "--table"])
    assert result.exit_code == 0, result.output
    headers = [line for line in result.output.splitlines() if line.startswith("── sample")]
    assert [h.split("line ")[1].split(",")[0] for h in headers] == [str(line) for line in lines]
    assert f"pack {k}: {ds[k].num_tokens} of 256 tokens, {len(lines)} samples" in result.output
    bad = runner.invoke(main, ["inspect", str(out), "--row", str(len(ds))])
    assert bad.exit_code == 1 and f"has {len(ds)} rows" in bad.output


def test_an_interrupted_prepare_resumes_without_tokenizing_again(data, tok, tmp_path, monkeypatch):
    from template_forge.data import packed as shards
    from template_forge.data import prepare
    from template_forge.format.spec import load_builtin as builtin

    out = tmp_path / "packed"
    real_write, real_tokenize = shards.write_shard, prepare._tokenize
    tokenized: list[int] = []
    monkeypatch.setattr(prepare, "_tokenize", lambda *a, **k: tokenized.append(1) or real_tokenize(*a, **k))

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "write_shard", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_file(data, Encoder(builtin("llama3"), tok), out, context_length=64, workers=1, shard_bytes=4096)
    assert not out.exists() and (tmp_path / ".packed.tokenized" / "manifest.json").is_file()
    monkeypatch.setattr(shards, "write_shard", real_write)
    manifest, reused = prepare.prepare_file(data, Encoder(builtin("llama3"), tok), out, context_length=64, workers=1,
                                            shard_bytes=4096)
    assert not reused and tokenized == [1]  # the tokenized rows of the first run were used
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "packed"]
    assert manifest["tokenize"]["counts"]["written"] == 60


def test_packing_everything_away_warns(runner, data, tok, tmp_path):
    result = runner.invoke(main, ["prepare", str(data), "-f", "llama3", "-t", tok, "-n", "4", "-o", str(tmp_path / "p"),
                                  "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: no packs: all 60 samples were dropped (60 too_long). Raise --context-length" in result.output
    assert "no packs" in runner.invoke(main, ["stats", str(tmp_path / "p")]).output


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("stats"), lambda m: m.update(stats="x"), lambda m: m["stats"].update(samples=None),
], ids=["no-stats", "stats-a-string", "samples-null"])
def test_stats_of_a_hand_edited_manifest_is_a_clear_error(runner, data, tok, tmp_path, edit):
    out = tmp_path / "packed"
    assert _prepare(runner, data, tok, out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(main, ["stats", str(out)])
    assert result.exit_code == 1 and "its statistics are not what tforge writes" in result.output, result.output
