"""Hostile JSONL lines: every way a line can fail is a located bad line, never a traceback.

Deep nesting, huge numbers, lone surrogates, NaN, repeated keys, BOMs and every JSON type in
every field go through ``parse_record``, the encoder (both engines), ``tokenize_file``,
``prepare_file`` and the CLI, with ``--on-error stop`` and ``skip``.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.cli import main
from template_forge.data.conversations import REASONS, BadLine, parse_record
from template_forge.data.prepare import prepare_file, tokenize_file
from template_forge.data.tokenized import TokenizedDataset
from template_forge.errors import DataError, TemplateForgeError
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

EXAMPLES = int(os.environ.get("TFORGE_EXAMPLES", 25))
FUZZ = settings(max_examples=EXAMPLES, derandomize=not os.environ.get("TFORGE_RANDOM"), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
E2E = settings(FUZZ, max_examples=max(3, EXAMPLES // 5))

USER = '{"role": "user", "content": "Hi"}'
ASSISTANT = '{"role": "assistant", "content": "Yo"}'


def line(*messages: str, extra: str = "") -> bytes:
    return ('{"messages": [' + ", ".join(messages) + "]" + extra + "}").encode()


def deep(n: int) -> str:
    return "[" * n + "]" * n


CALL = '{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": %s}}]}'

#: (raw line, reason, message index, what the message must say)
HOSTILE = [
    (('{"messages": ' + deep(1000) + "}").encode(), "too_deep", None, r"^d\.jsonl:3: arrays and objects nest more than 100 deep"),
    (line(USER, '{"role": "assistant", "content": ' + deep(150) + "}"), "too_deep", None, "nest more than 100"),
    (line(USER, ASSISTANT, extra=', "x": ' + "7" * 5000), "number_too_large", None, r"more than 4300 digits\. Write it as a string"),
    (line(USER, ASSISTANT, extra=', "x": -1e999'), "number_too_large", None, r"'-1e999' is beyond the range of a float"),
    (line('{"role": "user", "content": "a\\ud800b"}', ASSISTANT), "invalid_text", 0,
     r"^d\.jsonl:3: message 0: `messages\[0\]\.content` holds a lone UTF-16 surrogate '\\ud800'"),
    (line(USER, '{"role": "assistant", "content": "x", "\\udfff": 1}'), "invalid_text", 1, r"`messages\[1\]\.\\udfff`"),
    (line(USER, ASSISTANT, extra=', "tools": [{"name": "f", "description": "\\uDC00"}]'), "invalid_text", None,
     r"`tools\[0\]\.description`"),
    (line(USER, CALL % json.dumps('{"a": "\\udc00"}')), "bad_arguments", 1, r"arguments` of tool call 0 .*lone UTF-16 surrogate"),
    (line(USER, CALL % json.dumps(deep(5000))), "bad_arguments", 1, r"is not valid JSON: arrays and objects nest more than 100"),
    (line(USER, CALL % json.dumps('{"n": ' + "9" * 4400 + "}")), "bad_arguments", 1, r"more than 4300 digits"),
    (line(USER, ASSISTANT, extra=', "x": NaN'), "invalid_json", None, r"`NaN` is not JSON"),
    (line(USER, ASSISTANT, extra=', "x": Infinity'), "invalid_json", None, r"`Infinity` is not JSON"),
    (line('{"role": "user", "content": "a", "role": "assistant"}'), "duplicate_key", None, r"key 'role' appears twice"),
    (b"\xef\xbb\xbf" + line(USER, ASSISTANT), "invalid_json", None, r"byte-order mark \(allowed on line 1 only\)"),
    (line('{"role": "user", "content": "a\x01b"}', ASSISTANT), "invalid_json", None, r"Invalid control character"),
    (line('{"role": "\\u001b[2J", "content": "a"}', ASSISTANT), "unknown_role", 0, r"unknown role '\\x1b\[2J'"),
    (line('{"role": "' + "r" * 5000 + '", "content": "a"}'), "unknown_role", 0, r"unknown role 'r{20,50}…' \(5000 characters\)"),
    (line(USER, ASSISTANT, extra=', "tools": [{"\\u0007key": 1}]'), "bad_tools", None, r"keys found: `\\x07key`"),
]


@pytest.mark.parametrize("raw,reason,index,pattern", HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_lines_are_located_bad_lines(raw, reason, index, pattern):
    bad = parse_record(raw, path="d.jsonl", line=3)
    assert isinstance(bad, BadLine), bad
    assert (bad.reason, bad.message_index) == (reason, index)
    assert reason in REASONS
    with pytest.raises(DataError, match=pattern):
        raise bad.error()
    str(bad).encode("utf-8")  # printable: no surrogate reaches the terminal


def test_a_bom_starts_line_one_only_and_escaped_controls_and_pairs_are_text():
    assert parse_record(b"\xef\xbb\xbf" + line(USER, ASSISTANT), path="d", line=1)[0][1]["content"] == "Yo"
    text = parse_record(line('{"role": "user", "content": "\\u0000\\ud83d\\ude00"}', ASSISTANT), path="d", line=2)
    assert text[0][0]["content"] == "\x00\U0001f600"
    ok = parse_record(line(USER, ASSISTANT, extra=', "x": ' + deep(99)), path="d", line=2)
    assert isinstance(ok, tuple)


# ---------------------------------------------------------------- fuzz: any JSON in any field
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=8), st.sampled_from(["user", "assistant", "tool", "system", "function"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=8)
_FIELDS = ["role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content", "thinking", "reasoning",
           "train", "weight"]


def _message(value):
    return st.dictionaries(st.sampled_from(_FIELDS), value, max_size=4)


_call = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=4), "arguments": st.one_of(_json.map(json.dumps), _json)})})
_field_values = st.one_of(_json, st.lists(_call, max_size=2), st.lists(st.text(max_size=4), max_size=2))
_records = st.fixed_dictionaries({"messages": st.one_of(_json, st.lists(st.one_of(_message(_field_values), _json),
                                                                          max_size=4))},
                                 optional={"tools": st.one_of(_json, st.lists(st.dictionaries(
                                     st.sampled_from(["type", "function", "name", "parameters"]), _json), max_size=2))})


def _mangle(text: str, how: int, at: int) -> str:
    """Break a JSON text in one of the hostile ways, at a string position when there is one."""
    quote = text.find('"', at % max(len(text), 1))
    pos = quote + 1 if quote >= 0 else len(text)
    return [text,
            text[:pos] + "\\ud800" + text[pos:] if quote >= 0 else text,
            text[:pos] + "\\udfff\\ud800" + text[pos:] if quote >= 0 else text,
            '{"messages": ' + deep(200 + at % 800) + "}",
            text[:-1] + ', "n": ' + "1" * (4301 + at) + "}" if text.endswith("}") else text,
            text[:-1] + ', "n": NaN}' if text.endswith("}") else text,
            text.replace("{", '{"k": 1, "k": 2, ', 1),
            text[: at % max(len(text), 1)],
            ][how]


@pytest.fixture(scope="module", params=["tiktoken", "hf"])
def encoder(request, real_tokenizer):
    return Encoder(load_builtin("llama3"), str(real_tokenizer("llama3")), engine=request.param)


@FUZZ
@given(record=_records, how=st.integers(0, 7), at=st.integers(0, 400))
def test_any_line_is_rows_or_a_bad_line(encoder, record, how, at):
    raw = _mangle(json.dumps(record), how, at).encode("utf-8", "surrogatepass")
    parsed = parse_record(raw, path="d.jsonl", line=5, need_assistant=False)
    if isinstance(parsed, BadLine):
        assert parsed.reason in REASONS and str(parsed).startswith("d.jsonl:5: ")
        str(parsed).encode("utf-8")
        return
    messages, tools = parsed
    try:
        encoder.encode({"messages": messages, "tools": tools} if tools else messages)
    except TemplateForgeError:
        pass  # a located RenderError / EncodeError: prepare makes it an `unrenderable` line


# ---------------------------------------------------------------- end to end: counts and rows
GOOD = [json.dumps({"messages": [{"role": "user", "content": f"q{i} " * (i % 5 + 1)},
                                 {"role": "assistant", "content": f"a{i}"}]}).encode() for i in range(8)]
BAD = [h[0] for h in HOSTILE if h[0][:3] != b"\xef\xbb\xbf"] + [b"\xef\xbb\xbf{}", b'"\\ud800"', b"[" * 5000]


def _write(path, raws):
    path.write_bytes(b"".join(r + b"\n" for r in raws))
    return path


def _rows(folder):
    ds = TokenizedDataset(folder)
    return [(ds[k].input_ids.tolist(), ds[k].loss_mask.tolist()) for k in range(len(ds))]


_mixes = st.lists(st.one_of(st.sampled_from(GOOD).map(lambda r: (True, r)), st.sampled_from(BAD).map(lambda r: (False, r))),
                  min_size=1, max_size=12)


@E2E
@given(mix=_mixes, workers=st.sampled_from([1, 2]))
def test_tokenize_skips_and_counts_exactly_the_bad_lines(tmp_path_factory, encoder, mix, workers):
    tmp = tmp_path_factory.mktemp("t")
    data = _write(tmp / "d.jsonl", [r for _, r in mix])
    good = _write(tmp / "good.jsonl", [r for ok, r in mix if ok])
    bad_lines = [k + 1 for k, (ok, _) in enumerate(mix) if not ok]
    if bad_lines:
        with pytest.raises(DataError, match=rf"^{data}:{bad_lines[0]}: "):
            tokenize_file(data, encoder, tmp / "stopped", workers=workers, lines_per_chunk=3)
        assert not (tmp / "stopped").exists()
    report = tokenize_file(data, encoder, tmp / "out", on_error="skip", workers=workers, lines_per_chunk=3)
    counts = report.manifest["counts"]
    assert counts["skipped_total"] == len(bad_lines) and counts["written"] == len(mix) - len(bad_lines)
    tokenize_file(good, encoder, tmp / "ref", workers=1)
    assert _rows(tmp / "out") == _rows(tmp / "ref")
    assert [TokenizedDataset(tmp / "out").line(k) for k in range(counts["written"])] == [
        k + 1 for k, (ok, _) in enumerate(mix) if ok]


@E2E
@given(mix=_mixes)
def test_prepare_skips_and_counts_exactly_the_bad_lines(tmp_path_factory, encoder, mix):
    tmp = tmp_path_factory.mktemp("p")
    data = _write(tmp / "d.jsonl", [r for _, r in mix])
    good = _write(tmp / "good.jsonl", [r for ok, r in mix if ok])
    n_bad = sum(not ok for ok, _ in mix)
    if n_bad:
        with pytest.raises(DataError, match=rf"^{data}:\d+: "):
            prepare_file(data, encoder, tmp / "stopped", context_length=64, workers=1)
        assert sorted(p.name for p in tmp.iterdir()) == ["d.jsonl", "good.jsonl"]
    manifest, _ = prepare_file(data, encoder, tmp / "out", context_length=64, on_error="skip", workers=1)
    assert manifest["tokenize"]["counts"]["skipped_total"] == n_bad
    if n_bad < len(mix):
        want, _ = prepare_file(good, encoder, tmp / "ref", context_length=64, workers=1)
        assert manifest["stats"] == want["stats"]


@pytest.mark.parametrize("command", ["tokenize", "prepare"])
def test_cli_stops_with_a_located_error_or_skips_and_counts(tmp_path, real_tokenizer, command):
    data = _write(tmp_path / "d.jsonl", [GOOD[0]] + BAD + [GOOD[1]])
    tok = str(real_tokenizer("llama3"))
    args = [command, str(data), "-f", "llama3", "-t", tok, "--workers", "1"] + (["-n", "64"] if command == "prepare" else [])
    runner = CliRunner()
    stopped = runner.invoke(main, args + ["-o", str(tmp_path / "stopped")])
    assert stopped.exit_code == 1 and isinstance(stopped.exception, SystemExit)  # no traceback
    assert f"Error: {data}:2: arrays and objects nest more than 100 deep" in stopped.output
    assert not (tmp_path / "stopped").exists()
    skipped = runner.invoke(main, args + ["-o", str(tmp_path / "out"), "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped {len(BAD)} of {len(BAD) + 2} lines" in skipped.output


# ---------------------------------------------------------------- backtracking pre-tokenizers
def _regex_tokenizer(pattern: str):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(sorted(alphabet))}, []))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def test_a_pre_tokenizer_that_backtracks_on_long_runs_is_refused_at_load():
    from template_forge.tokens.vocab import Vocab

    with pytest.raises(DataError, match=r"cannot be used: the tokenizer failed on a probe text .*retry-limit-in-match"
                                        r".*backtracks too much"):
        Vocab(_regex_tokenizer(r"(a|aa)+b|\S|\s"))


@pytest.mark.parametrize("engine", ["hf", "tiktoken"])
def test_a_line_the_pre_tokenizer_gives_up_on_is_a_located_bad_line(tmp_path, engine):
    # Passes the load probe (no long run of "x" there), blows up on a line with one.
    encoder = Encoder(load_builtin("chatml"), _regex_tokenizer(r"(x|xx)+(?=y)|\S|\s"), engine=engine)
    assert encoder.engine == engine  # the lookahead makes fancy-regex backtrack (else: a linear engine)
    hostile = line(USER, '{"role": "assistant", "content": "' + "x" * 60 + '"}')
    data = _write(tmp_path / "d.jsonl", [GOOD[0], hostile, GOOD[1]])
    with pytest.raises(DataError, match=rf"^{data}:2: the tokenizer failed on the text: .*backtracks too much"):
        tokenize_file(data, encoder, tmp_path / "stopped", workers=1)
    report = tokenize_file(data, encoder, tmp_path / "out", on_error="skip", workers=1)
    assert report.manifest["counts"]["skipped"] == {"untokenizable": 1} and report.written == 2


def test_a_line_past_64_mib_is_a_bad_line_read_in_pieces(tmp_path, real_tokenizer):
    from template_forge.data.conversations import MAX_LINE_BYTES

    huge = json.dumps({"messages": [{"role": "user", "content": "x" * MAX_LINE_BYTES},
                                    {"role": "assistant", "content": "y"}]}).encode()
    data = _write(tmp_path / "d.jsonl", [GOOD[0], huge, GOOD[1]])
    del huge
    encoder = Encoder(load_builtin("llama3"), str(real_tokenizer("llama3")))
    with pytest.raises(DataError, match=rf"^{data}:2: the line has [\d,]+ bytes, more than the 64 MiB"):
        tokenize_file(data, encoder, tmp_path / "stopped", workers=1)
    report = tokenize_file(data, encoder, tmp_path / "out", on_error="skip", workers=1)
    assert report.manifest["counts"]["skipped"] == {"line_too_long": 1}
    assert [TokenizedDataset(tmp_path / "out").line(k) for k in range(2)] == [1, 3]
    good = _write(tmp_path / "good.jsonl", [GOOD[0], GOOD[1]])
    tokenize_file(good, encoder, tmp_path / "ref", workers=1)
    assert _rows(tmp_path / "out") == _rows(tmp_path / "ref")
