"""JSONL in → Arrow shards out: located errors, skip accounting, atomic output, round trip."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from template_forge.data.conversations import parse_line
from template_forge.data.prepare import tokenize_file
from template_forge.data.provenance import sha256_file
from template_forge.data.tokenized import TokenizedDataset
from template_forge.errors import DataError
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}

BAD_LINES = [
    (b"\xff\xfe{}", "invalid_utf8", "not valid UTF-8"),
    (b'{"messages": [', "invalid_json", "invalid JSON at column"),
    (b"[1, 2]", "not_an_object", "found a JSON array"),
    (b'{"conversations": []}', "missing_messages", "ShareGPT records"),
    (b'{"messages": "hi"}', "missing_messages", "`messages` must be a list"),
    (b'{"messages": []}', "empty_conversation", "`messages` is empty"),
    (b'{"messages": ["hi"]}', "bad_message", "message 0: expected an object"),
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "gpt", "content": "b"}]}', "unknown_role",
     "message 1: unknown role 'gpt'; expected system, user or assistant. Map ShareGPT roles"),
    (b'{"messages": [{"role": "user", "content": {"text": "a"}}]}', "bad_content", "message 0: `content` must be a string, found a JSON object"),
    (b'{"messages": [{"role": "user"}]}', "bad_content", "found missing"),
    (b'{"messages": [{"role": "user", "content": "a"}]}', "no_assistant", "no assistant message"),
]


@pytest.mark.parametrize("raw,reason,text", BAD_LINES)
def test_bad_lines_are_located_and_explained(raw, reason, text):
    bad = parse_line(raw, path="data.jsonl", line=12)
    assert bad.reason == reason
    assert str(bad).startswith("data.jsonl:12: ")
    assert text in str(bad)


def test_alternation_is_checked_only_where_the_format_requires_it():
    raw = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                   {"role": "assistant", "content": "c"}]}).encode()
    assert isinstance(parse_line(raw, path="d", line=1), list)
    bad = parse_line(raw, path="d", line=1, require_alternation=True)
    assert bad.reason == "bad_order" and bad.message_index == 1 and "expected a assistant" not in str(bad)


@pytest.fixture
def llama3(real_tokenizer):
    return Encoder(load_builtin("llama3"), real_tokenizer("llama3"))


def _write(path, records):
    with open(path, "wb") as fh:
        for r in records:
            fh.write(r if isinstance(r, bytes) else json.dumps(r).encode())
            fh.write(b"\n")
    return path


def _conv(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i} " + "word " * (i % 13)},
                         {"role": "assistant", "content": f"answer {i}"}]}


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_in_input_order(tmp_path, llama3, workers):
    records = [_conv(i) for i in range(700)]
    records.insert(5, b"")  # blank lines are ignored but keep their number
    data = _write(tmp_path / "d.jsonl", records)
    out = tmp_path / "out"
    report = tokenize_file(data, llama3, out, workers=workers, lines_per_chunk=64, shard_bytes=40_000)
    ds = TokenizedDataset(out)
    assert len(ds) == report.written == 700 == report.manifest["counts"]["written"]
    assert len(report.manifest["shards"]) > 1  # bounded shards
    for k in (0, 4, 5, 350, 699):
        i = k
        want = llama3.encode(records[i + (i >= 5)]["messages"])
        got = ds[k]
        assert got.input_ids.tolist() == want.input_ids.tolist() and got.loss_mask.tolist() == want.loss_mask.tolist()
        assert ds.line(k) == k + 1 + (k >= 5)
    m = report.manifest
    assert m["tokens"]["total"] == sum(e.num_tokens for e in ds) and m["tokens"]["trained"] == sum(e.num_trained for e in ds)
    assert m["source"]["sha256"] == sha256_file(data)
    for shard in m["shards"]:
        assert sha256_file(out / shard["file"]) == shard["sha256"]
        table = pa.ipc.open_stream(pa.memory_map(str(out / shard["file"]))).read_all()
        assert table.num_rows == shard["rows"]
        assert table.schema.field("input_ids").type == pa.list_(pa.int32())
        assert table.schema.field("loss_mask").type == pa.list_(pa.uint8())
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_file(str(out / m["shards"][0]["file"]))
    assert hf[0]["input_ids"] == ds[0].input_ids.tolist() and hf[0]["line"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_rows_are_zero_copy_views_of_the_mapped_file(tmp_path, llama3):
    records = [_conv(i) for i in range(1500)]  # more than one record batch in the shard
    data = _write(tmp_path / "d.jsonl", records)
    tokenize_file(data, llama3, tmp_path / "out", workers=1)
    ds = TokenizedDataset(tmp_path / "out")
    assert len(ds) == 1500 and len(ds.manifest["shards"]) == 1
    for k in (3, 1400, -1):
        row = ds[k]
        assert not row.input_ids.flags.owndata and not row.input_ids.flags.writeable
        assert row.input_ids.tolist() == llama3.encode(records[k]["messages"]).input_ids.tolist()


def test_stop_writes_nothing_and_names_the_line(tmp_path, llama3):
    data = _write(tmp_path / "d.jsonl", [_conv(i) for i in range(300)] + [b'{"messages": 1}'] + [_conv(1)])
    with pytest.raises(DataError, match=r"d\.jsonl:301: `messages` must be a list"):
        tokenize_file(data, llama3, tmp_path / "out", workers=2, lines_per_chunk=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_skip_counts_by_reason(tmp_path, llama3):
    records = [_conv(0), BAD_LINES[1][0], BAD_LINES[7][0], BAD_LINES[7][0], _conv(1),
               {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
                             {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    data = _write(tmp_path / "d.jsonl", records)
    spec = load_builtin("mistral-v1")  # roles must alternate: the last line is out of order
    enc = Encoder(spec, llama3.vocab)
    report = tokenize_file(data, enc, tmp_path / "out", on_error="skip", workers=1)
    assert report.written == 2 and report.lines == 6
    assert dict(report.skipped) == {"invalid_json": 1, "unknown_role": 2, "bad_order": 1}
    assert report.manifest["counts"]["skipped"] == {"bad_order": 1, "invalid_json": 1, "unknown_role": 2}
    assert [TokenizedDataset(tmp_path / "out").line(k) for k in range(2)] == [1, 5]


def test_unrenderable_lines_are_skipped_with_their_message_index(tmp_path, llama3):
    records = [_conv(0), {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "c"},
                                       {"role": "system", "content": "b"}, {"role": "assistant", "content": "d"}]}]
    data = _write(tmp_path / "d.jsonl", records)
    spec = load_builtin("llama2")
    with pytest.raises(DataError, match=r"d\.jsonl:2: message 2: messages 0 and 2 are both system messages"):
        tokenize_file(data, Encoder(spec, llama3.vocab), tmp_path / "out", workers=1)
    report = tokenize_file(data, Encoder(spec, llama3.vocab), tmp_path / "out", workers=1, on_error="skip")
    assert dict(report.skipped) == {"unrenderable": 1} and report.written == 1


@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_max_length(tmp_path, llama3, overlong):
    records = [_conv(i) for i in range(20)]
    data = _write(tmp_path / "d.jsonl", records)
    lengths = [llama3.encode(r["messages"]).num_tokens for r in records]
    limit = sorted(lengths)[10]
    report = tokenize_file(data, llama3, tmp_path / "out", max_length=limit, overlong=overlong,
                           on_error="skip", workers=1)
    over = sum(n > limit for n in lengths)
    assert over > 0
    ds = TokenizedDataset(tmp_path / "out")
    if overlong == "drop":
        assert report.skipped["too_long"] == over and len(ds) == 20 - over
        assert "--overlong truncate" in report.examples["too_long"][0]
    else:
        assert report.truncated == over and len(ds) == 20
        assert max(e.num_tokens for e in ds) == limit


def test_too_long_is_dropped_and_reported_even_when_stopping_on_errors(tmp_path, llama3):
    data = _write(tmp_path / "d.jsonl", [_conv(12), _conv(0)])
    limit = llama3.encode(_conv(0)["messages"]).num_tokens
    report = tokenize_file(data, llama3, tmp_path / "out", max_length=limit, workers=1)
    assert report.written == 1 and dict(report.skipped) == {"too_long": 1}
    example = report.examples["too_long"][0]
    assert example.startswith(f"{data}:1: ") and f"more than --max-length {limit}" in example
    assert TokenizedDataset(tmp_path / "out").line(0) == 2


def test_existing_output_is_kept_unless_overwrite(tmp_path, llama3):
    data = _write(tmp_path / "d.jsonl", [_conv(1)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        tokenize_file(data, llama3, out, workers=1)
    assert (out / "precious.txt").read_text() == "keep"
    tokenize_file(data, llama3, out, workers=1, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.arrow"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "out"]


def test_an_interrupted_run_leaves_nothing(tmp_path, llama3, monkeypatch):
    data = _write(tmp_path / "d.jsonl", [_conv(i) for i in range(50)])
    import template_forge.data.tokenized as tokenized

    def boom(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenized.ShardWriter, "close", boom)
    with pytest.raises(KeyboardInterrupt):
        tokenize_file(data, llama3, tmp_path / "out", workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_manifest_hashes_track_spec_tokenizer_and_data(tmp_path, llama3, real_tokenizer):
    data = _write(tmp_path / "d.jsonl", [_conv(1)])
    a = tokenize_file(data, llama3, tmp_path / "a", workers=1).manifest
    spec2 = load_builtin("chatml")
    b = tokenize_file(data, Encoder(spec2, llama3.vocab), tmp_path / "b", workers=1).manifest
    c = tokenize_file(data, Encoder(llama3.spec, real_tokenizer("mistral-v3")), tmp_path / "c",
                      workers=1).manifest
    _write(data, [_conv(2)])
    d = tokenize_file(data, llama3, tmp_path / "d", workers=1).manifest
    assert a["spec"]["sha256"] != b["spec"]["sha256"] and a["tokenizer"]["sha256"] == b["tokenizer"]["sha256"]
    assert a["tokenizer"]["sha256"] != c["tokenizer"]["sha256"] and a["spec"]["sha256"] == c["spec"]["sha256"]
    assert a["source"]["sha256"] != d["source"]["sha256"] and a["spec"] == d["spec"]


def test_progress_reports_every_byte(tmp_path, llama3):
    data = _write(tmp_path / "d.jsonl", [_conv(i) for i in range(30)])
    seen = []
    tokenize_file(data, llama3, tmp_path / "out", workers=1, progress=seen.append)
    assert sum(seen) == os.path.getsize(data)


def test_causal_lm_accepts_conversations_without_assistant(tmp_path, real_tokenizer):
    data = _write(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "just text"}]}])
    spec = load_builtin("chatml")
    enc = Encoder(spec, real_tokenizer("llama3"), policy="causal_lm")
    report = tokenize_file(data, enc, tmp_path / "out", workers=1)
    row = TokenizedDataset(tmp_path / "out")[0]
    assert report.written == 1 and row.num_trained == row.num_tokens > 0
    assert np.all(row.loss_mask == 1)
