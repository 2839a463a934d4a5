"""Conversation files with tools, tool calls, tool results and reasoning: located errors,
reason codes counted, `tools` read beside the messages."""

from __future__ import annotations

import json

import pytest

from template_forge.data.conversations import REASONS, BadLine, parse_line, parse_record, read_conversation, read_record
from template_forge.data.prepare import describe_skips, tokenize_file
from template_forge.errors import DataError
from template_forge.format import messages
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

from conftest import make_tokenizer

CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
AGENTIC = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {"role": "assistant", "content": None, "reasoning_content": "Look it up.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": "18°C"},
    {"role": "assistant", "content": "18°C."},
]


def line(messages, **record) -> bytes:
    return json.dumps({"messages": messages, **record}).encode()


def test_reasons_keep_the_old_codes_in_order_and_add_the_new_after_bad_content():
    old = ["invalid_utf8", "invalid_json", "not_an_object", "missing_messages", "empty_conversation", "bad_message",
           "unknown_role", "bad_content", "no_assistant", "bad_order", "unrenderable", "too_long"]
    codes = list(REASONS)
    assert [c for c in codes if c in old] == old
    assert codes[codes.index("bad_content") + 1:codes.index("no_assistant")] == list(messages.REASONS)[3:]


def test_an_agentic_line_returns_its_dicts_and_tools_unchanged():
    raw = line(AGENTIC, tools=TOOLS)
    assert parse_line(raw, path="d.jsonl", line=1) == AGENTIC
    assert parse_record(raw, path="d.jsonl", line=1) == (AGENTIC, TOOLS)
    assert parse_record(line(AGENTIC[1:]), path="d.jsonl", line=1) == (AGENTIC[1:], [])


def test_a_turn_of_tool_calls_alone_counts_as_an_assistant_turn():
    assert isinstance(parse_line(line(AGENTIC[:3]), path="d", line=1), list)


BAD = [
    (AGENTIC[:2] + [{"role": "assistant", "content": None}], "bad_content", 2,
     "`content` must be a string, found null"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "multimodal", 0,
     "multimodal content is not supported yet: part 0 of this message is an image; send text parts only."),
    (AGENTIC[:2] + [{"role": "assistant", "tool_calls": [{"name": "weather", "arguments": "{}"}]}], "bad_tool_call", 2,
     "tool call 0 is flat"),
    (AGENTIC[:2] + [{"role": "assistant", "tool_calls": [{"function": {"name": "w", "arguments": "{'a': 1}"}}]}],
     "bad_arguments", 2, "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
    (AGENTIC[:3] + [{"role": "assistant", "tool_calls": [CALL]}], "duplicate_call_id", 3,
     "by call 0 of message 2 and by call 0 of message 3"),
    (AGENTIC[:3] + [{"role": "tool", "tool_call_id": "c2", "content": "x"}], "unknown_call_id", 3, "known ids: 'c1'"),
    (AGENTIC[:3] + [{"role": "ipython", "content": "x", "name": 1}], "bad_tool_result", 3, "`name` must be"),
    ([{"role": "user", "content": "x", "reasoning_content": "y"}], "bad_reasoning", 0, "a user message has"),
]


@pytest.mark.parametrize("messages_,reason,index,text", BAD)
def test_bad_agentic_lines_are_located_and_explained(messages_, reason, index, text):
    bad = parse_line(line(messages_), path="data.jsonl", line=12)
    assert isinstance(bad, BadLine) and (bad.reason, bad.message_index) == (reason, index)
    assert str(bad).startswith(f"data.jsonl:12: message {index}: ") and text in str(bad)


def test_bad_tools_are_located_on_the_line():
    bad = parse_record(line(AGENTIC, tools=[{"type": "function", "function": {"name": 3}}]), path="d.jsonl", line=4)
    assert (bad.reason, bad.message_index) == ("bad_tools", None)
    assert str(bad) == ("d.jsonl:4: tool 0: `function.name` must be the tool's name, a non-empty string, "
                        "found a JSON number.")


def test_alternation_ignores_tool_results():
    calls = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "r"}
    ok = [{"role": "user", "content": "a"}, calls, result, {"role": "user", "content": "b"},
          {"role": "assistant", "content": "c"}]
    assert isinstance(parse_line(line(ok), path="d", line=1, require_alternation=True), list)
    # As decided: only tool results are left out, so a call turn and its answer are two assistant turns.
    bad = parse_line(line(ok[:3] + [{"role": "assistant", "content": "c"}]), path="d", line=1, require_alternation=True)
    assert (bad.reason, bad.message_index) == ("bad_order", 3)
    assert "expected the user turn, found a assistant message" in str(bad)


def test_read_record_returns_the_tools(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"messages": AGENTIC, "tools": TOOLS}))
    (tmp_path / "c.jsonl").write_text(line([{"role": "user", "content": "x"}]).decode() + "\n" +
                                      line(AGENTIC, tools=TOOLS).decode() + "\n")
    assert read_record(str(tmp_path / "c.json")) == (AGENTIC, TOOLS)
    assert read_record(str(tmp_path / "c.jsonl")) == ([{"role": "user", "content": "x"}], [])
    assert read_record(str(tmp_path / "c.jsonl"), line=2) == (AGENTIC, TOOLS)
    assert read_conversation(str(tmp_path / "c.jsonl"), line=2) == AGENTIC
    (tmp_path / "bad.json").write_text(json.dumps({"messages": AGENTIC, "tools": "weather"}))
    with pytest.raises(DataError, match=r"bad\.json: `tools` must be a list of tool schemas, found a JSON string"):
        read_record(str(tmp_path / "bad.json"))


def test_skipped_agentic_lines_are_counted_by_reason(tmp_path):
    good = line([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    raws = [good] + [line(m) for m, *_ in BAD] + [line(AGENTIC, tools={}), good]
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(raws) + b"\n")
    make_tokenizer(tmp_path / "tok")  # tiny, with the Llama 3 header tokens
    encoder = Encoder(load_builtin("llama3"), tmp_path / "tok")
    report = tokenize_file(tmp_path / "d.jsonl", encoder, tmp_path / "out", on_error="skip", workers=1)
    expected = {reason: 1 for _, reason, *_ in BAD} | {"bad_tools": 1}
    assert report.written == 2 and dict(report.skipped) == expected
    assert report.manifest["counts"]["skipped"] == dict(sorted(expected.items()))
    assert any("a tool result answers no earlier call  (unknown_call_id)" in text for text in describe_skips(report))
