"""The message model: every rule's located, explained error, and a property that valid agentic
conversations pass and come back field for field."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import timeit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from template_forge.errors import TemplateForgeError
from template_forge.format.messages import (
    REASONS,
    ROLES,
    TOOL_ROLES,
    Message,
    MessageError,
    ToolCall,
    check_messages,
    check_tools,
    flatten_content,
)

from strategies import contents


def user(text="Hi"):
    return {"role": "user", "content": text}


def call(name="weather", arguments='{"city": "Paris"}', id="c1", **extra):
    out = {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}
    if id is not None:
        out["id"] = id
    return out


def calling(*calls, content=None, **extra):
    return {"role": "assistant", "content": content, "tool_calls": list(calls), **extra}


def result(call_id="c1", content="18°C", role="tool", **extra):
    return {"role": role, "tool_call_id": call_id, "content": content, **extra}


def fails(messages, reason, pattern, index):
    with pytest.raises(MessageError, match=pattern) as info:
        check_messages(messages)
    assert info.value.reason == reason and info.value.message_index == index
    assert reason in REASONS
    return info.value


def test_contract():
    assert ROLES == ("system", "user", "assistant", "tool", "ipython") and TOOL_ROLES == ("tool", "ipython")
    assert list(REASONS)[:3] == ["bad_message", "unknown_role", "bad_content"]
    assert {"bad_tool_call", "bad_arguments", "unknown_call_id", "duplicate_call_id", "multimodal", "bad_tools",
            "bad_reasoning"} <= set(REASONS)
    err = MessageError("bad_content", "x", 2)
    assert isinstance(err, ValueError) and isinstance(err, TemplateForgeError) and str(err) == "x"
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.message_index, str(back)) == ("bad_content", 2, "x")


def test_plain_messages_keep_their_dicts():
    msgs = [{"role": "system", "content": "s"}, user(), {"role": "assistant", "content": "Yo", "train": False}]
    out = check_messages(msgs)
    assert out == [Message(0, "system", "s"), Message(1, "user", "Hi"), Message(2, "assistant", "Yo")]
    assert all(m.raw is d for m, d in zip(out, msgs)) and out[2].tool_calls == () and out[2].reasoning is None
    assert pickle.loads(pickle.dumps(out)) == out and dataclasses.replace(out[1], content="x").content == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        out[0].content = "changed"


def test_an_agentic_conversation():
    args = '{ "city" :"Paris",\n "unit": "C" }'  # odd spacing: kept byte for byte
    msgs = [user(), calling(call(arguments=args), call("time", {"tz": "CET"}, id="c2"), reasoning_content="Two."),
            result("c1", name="weather"), result("c2", role="ipython", content=[{"type": "text", "text": "9:00"}]),
            {"role": "assistant", "content": "18°C at 9:00"}]
    out = check_messages(msgs)
    first, second = out[1].tool_calls
    assert first == ToolCall("weather", args, "c1") and first.arguments is args and first.raw is msgs[1]["tool_calls"][0]
    assert second.arguments is msgs[1]["tool_calls"][1]["function"]["arguments"]
    assert (out[1].content, out[1].reasoning) == ("", "Two.")
    assert (out[2].tool_call_id, out[2].name, out[3].role, out[3].content) == ("c1", "weather", "ipython", "9:00")
    assert out[4] == Message(4, "assistant", "18°C at 9:00")


# ---------------------------------------------------------------- messages, roles, content
def test_not_a_list_or_not_objects():
    with pytest.raises(MessageError, match=r"must be a list of messages, found a JSON string") as info:
        check_messages("hi")
    assert info.value.message_index is None and info.value.reason == "bad_message"
    fails([user(), "hi"], "bad_message", r"expected an object with `role` and `content`, found a JSON string", 1)
    assert check_messages((user(),)) == [Message(0, "user", "Hi")]


@pytest.mark.parametrize("role,pattern", [
    ("gpt", r"^unknown role 'gpt'; expected system, user or assistant\. Map ShareGPT roles: human → user"),
    ("robot", r"^unknown role 'robot'; expected one of system, user, assistant, tool, ipython\. Rename the role"),
    ("function", r"legacy OpenAI `function` role is a tool result now: use role `tool`"),
    (["user"], r"^unknown role \['user'\]"),
    (None, r"^unknown role None"),
])
def test_unknown_roles(role, pattern):
    fails([user(), {"role": role, "content": "x"}], "unknown_role", pattern, 1)


@pytest.mark.parametrize("msg,pattern", [
    ({"role": "user"}, r"`content` must be a string, found missing\. Give the text as a string or a list of text parts\.$"),
    ({"role": "assistant", "content": None}, r"found null.*may leave it out only when it has `tool_calls`"),
    (calling(), r"found null.*only when it has `tool_calls`"),  # an empty list is no calls
    ({"role": "tool", "content": None}, r"found null"),
    ({"role": "user", "content": 3}, r"`content` must be a string, found a JSON number"),
    ({"role": "user", "content": {"text": "a"}}, r"found a JSON object"),
    ({"role": "user", "content": ["a", 3]}, r"^part 1 of `content` is a JSON number; expected a string or a text part"),
    ({"role": "user", "content": [{"text": "a"}]}, r'part 0 of `content` has no `type` \(add "type": "text"\)'),
    ({"role": "user", "content": [{"type": "text", "text": None}]}, r"part 0 of `content` has `text` missing"),
    ({"role": "user", "content": [{"type": "file"}]}, r"part 0 of `content` has type 'file'"),
])
def test_bad_content(msg, pattern):
    fails([msg], "bad_content", pattern, 0)


def test_text_parts_are_flattened():
    parts = [{"type": "text", "text": "a "}, "b", {"type": "text", "text": "", "cache_control": {}}, {"type": "text", "text": "c"}]
    assert check_messages([{"role": "system", "content": parts}])[0].content == "a bc"
    assert flatten_content("as is", 0) == "as is" and flatten_content([], 0) == ""


@pytest.mark.parametrize("kind,what", [("image", "an image"), ("image_url", "an image"), ("audio", "audio"),
                                       ("input_audio", "audio"), ("video", "a video")])
def test_multimodal_parts_are_refused(kind, what):
    parts = [{"type": "text", "text": "Look:"}, {"type": kind, kind: {}}]
    err = fails([user(), {"role": "user", "content": parts}], "multimodal",
                f"^multimodal content is not supported yet: part 1 of this message is {what}; send text parts only", 1)
    with pytest.raises(MessageError) as info:
        flatten_content(parts, 7)
    assert info.value.message_index == 7 and str(info.value) == str(err)


# ---------------------------------------------------------------- tool calls
@pytest.mark.parametrize("bad,pattern", [
    ("nope", r"^`tool_calls` must be a list of calls \{\"id\""),
    (["nope"], r"^tool call 0 must be an object"),
    ([{"name": "f", "arguments": "{}", "id": "x"}], r"^tool call 0 is flat \(`name`, `arguments`, `id`\); write it in "
                                                   r"the OpenAI shape .* inside `function`"),
    ([call(), call(id="c2", fucntion={})], r"^tool call 1 has unknown key 'fucntion'; allowed: `id`, `type`, "
                                           r"`function`\. Did you mean `function`\?"),
    ([call(type="tool")], r"has `type` 'tool'; expected \"function\""),
    ([{"id": "a"}], r"needs a `function` object with `name` and `arguments`, found none"),
    ([{"function": "f"}], r"needs a `function` object .* found a JSON string"),
    ([{"function": {"name": "f", "arguments": "{}", "argument": 1}}], r"unknown `function` key 'argument'.*Did you mean `arguments`"),
    ([call(name="")], r"needs `function.name`"),
    ([call(id="")], r"tool call 0 has `id` a JSON string; expected a non-empty string"),
    ([call(id=7)], r"has `id` a JSON number"),
])
def test_bad_tool_calls(bad, pattern):
    fails([user(), {"role": "assistant", "content": "", "tool_calls": bad}], "bad_tool_call", pattern, 1)


def test_tool_calls_only_on_assistant_messages():
    fails([{"role": "user", "content": "x", "tool_calls": [call()]}], "bad_tool_call",
          r"^a user message has `tool_calls`; only assistant messages make tool calls", 0)
    assert check_messages([{"role": "user", "content": "x", "tool_calls": None}])[0].tool_calls == ()


@pytest.mark.parametrize("arguments,pattern", [
    ('{"city": "Paris"', r"is not valid JSON: Expecting ',' delimiter at column 17\. Write them as JSON"),
    ("", r"is not valid JSON: Expecting value at column 1"),
    (None, r"must be a JSON string or an object, found a JSON null"),
    (["x"], r"must be a JSON string or an object, found a JSON array"),
])
def test_bad_arguments(arguments, pattern):
    fails([calling(call(arguments=arguments))], "bad_arguments",
          r"^`function.arguments` of tool call 0 \(`weather`\) " + pattern, 0)


def test_missing_arguments_are_an_error():
    fails([calling({"function": {"name": "now"}})], "bad_arguments", r"is missing; templates read it.*\"\{\}\"", 0)


def test_arguments_that_parse_are_kept_byte_identical():
    for text in ('{}', '  {"a":1}  ', '{"a": "\\u00e9"}', '[1, 2]', '"s"', '{"x": NaN}'):
        assert check_messages([calling(call(arguments=text))])[0].tool_calls[0].arguments is text


# ---------------------------------------------------------------- ids
def test_duplicate_call_ids_name_both_messages():
    fails([user(), calling(call()), result(), calling(call("other", id="c1"))], "duplicate_call_id",
          r"^tool call id 'c1' is used twice: by call 0 of message 1 and by call 0 of message 3\. Give every call", 3)
    fails([calling(call(), call())], "duplicate_call_id", r"by call 0 of message 0 and by call 1 of message 0", 0)


def test_tool_results_answer_earlier_calls():
    fails([user(), calling(call(), call(id="c2")), result("c3")], "unknown_call_id",
          r"^`tool_call_id` 'c3' answers no tool call of an earlier assistant message \(known ids: 'c1', 'c2'\)", 2)
    fails([result("c1"), calling(call())], "unknown_call_id", r"known ids: none", 0)
    many = [calling(*(call(id=f"c{k}") for k in range(12))), result("x")]
    fails(many, "unknown_call_id", r"'c8', 'c9', …\)", 1)
    out = check_messages([calling(call(id=None)), {"role": "tool", "content": "r"}])  # ids are optional
    assert out[0].tool_calls[0].id is None and out[1].tool_call_id is None


@pytest.mark.parametrize("msg,pattern", [
    (result(""), r"^`tool_call_id` must be the id of the call this answers, a non-empty string, found a JSON string"),
    (result(3), r"found a JSON number"),
    (result(name=["weather"]), r"^`name` must be the tool's name as a string, found a JSON array"),
])
def test_bad_tool_results(msg, pattern):
    fails([calling(call()), msg], "bad_tool_result", pattern, 1)


# ---------------------------------------------------------------- reasoning
@pytest.mark.parametrize("keys,expected", [
    ({"reasoning_content": "a"}, "a"), ({"reasoning": "b"}, "b"), ({"thinking": "c"}, "c"),
    ({"reasoning_content": None, "reasoning": "b"}, "b"),
    ({"reasoning": "b", "thinking": "c", "reasoning_content": "a"}, "a"),  # transformers' order
    ({"reasoning": "b", "thinking": "c"}, "c"),
    ({"reasoning_content": None}, None),
])
def test_reasoning_aliases(keys, expected):
    assert check_messages([{"role": "assistant", "content": "x", **keys}])[0].reasoning == expected


def test_bad_reasoning():
    fails([{"role": "assistant", "content": "x", "reasoning_content": ["a"]}], "bad_reasoning",
          r"^`reasoning_content` must be a string or null, found a JSON array", 0)
    fails([{"role": "user", "content": "x", "thinking": "hm"}], "bad_reasoning",
          r"^a user message has `thinking`; only assistant messages carry reasoning", 0)
    fails([{"role": "assistant", "content": "x", "reasoning_content": "a", "thinking": 1}], "bad_reasoning",
          r"`thinking` must be a string", 0)


# ---------------------------------------------------------------- tools
def test_tools_are_returned_as_given():
    wrapped = {"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"},
                                                "strict": True}}
    bare = {"name": "now"}
    responses = {"type": "function", "name": "now2", "parameters": {}}
    out = check_tools([wrapped, bare, responses])
    assert out == [wrapped, bare, responses] and all(a is b for a, b in zip(out, [wrapped, bare, responses]))
    assert check_tools(None) == [] and check_tools(()) == []


@pytest.mark.parametrize("tools,pattern", [
    ({"name": "f"}, r"^`tools` must be a list of tool schemas, found a JSON object"),
    (["f"], r"^tool 0: expected an object \{\"type\": \"function\""),
    ([{"name": "f"}, {"type": "code_interpreter"}], r"^tool 1: has `type` 'code_interpreter'; only \"function\""),
    ([{"type": "function", "function": "f"}], r"^tool 0: `function` must be an object \{\"name\""),
    ([{"type": "function", "function": {"description": "d"}}], r"`function.name` must be the tool's name.*found none"),
    ([{"name": ""}], r"^tool 0: `name` must be the tool's name"),
    ([{"name": "f", "description": 3}], r"`description` must be a string, found a JSON number"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], r"`function.parameters` must be a JSON schema object"),
    ([{"functoin": {}}], r"keys found: `functoin`\. Did you mean `function`\?"),
])
def test_bad_tools(tools, pattern):
    with pytest.raises(MessageError, match=pattern) as info:
        check_tools(tools)
    assert info.value.reason == "bad_tools" and info.value.message_index is None


# ---------------------------------------------------------------- property: valid → passes, round-trips
names = st.text("abcdefghij_", min_size=1, max_size=8)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=6)
arguments = st.dictionaries(names, json_values, max_size=3).flatmap(
    lambda d: st.sampled_from([d, json.dumps(d), json.dumps(d, indent=1), json.dumps(d, separators=(",", ":"))]))
text_or_parts = st.one_of(contents, st.lists(st.one_of(contents, contents.map(lambda t: {"type": "text", "text": t})),
                                             max_size=3))


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(p if isinstance(p, str) else p["text"] for p in content)


@st.composite
def agentic_conversations(draw):
    """user → [assistant with calls → results]* → assistant, with reasoning and text parts."""
    msgs, counter = [{"role": "user", "content": draw(text_or_parts)}], iter(range(10**6))
    for _ in range(draw(st.integers(0, 3))):
        ids = [draw(st.one_of(st.none(), st.just(f"call_{next(counter)}"))) for _ in range(draw(st.integers(1, 3)))]
        calls = [{"type": "function", "function": {"name": draw(names), "arguments": draw(arguments)}} for _ in ids]
        for c, call_id in zip(calls, ids):
            if call_id is not None:
                c["id"] = call_id
            if draw(st.booleans()):
                del c["type"]
        msg = {"role": "assistant", "tool_calls": calls, **draw(st.sampled_from([{}, {"content": None}, {"content": "Let me check."}]))}
        if draw(st.booleans()):
            msg[draw(st.sampled_from(["reasoning_content", "reasoning", "thinking"]))] = draw(contents)
        msgs.append(msg)
        for c, call_id in zip(calls, ids):
            res = {"role": draw(st.sampled_from(TOOL_ROLES)), "content": draw(text_or_parts)}
            if call_id is not None and draw(st.booleans()):
                res["tool_call_id"] = call_id
            if draw(st.booleans()):
                res["name"] = c["function"]["name"]
            msgs.append(res)
    msgs.append({"role": "assistant", "content": draw(text_or_parts)})
    if draw(st.booleans()):
        msgs.insert(0, {"role": "system", "content": draw(text_or_parts)})
    return msgs


@given(agentic_conversations())
def test_valid_agentic_conversations_pass_and_round_trip(msgs):
    snapshot = json.dumps(msgs)
    out = check_messages(msgs)
    assert json.dumps(msgs) == snapshot  # nothing changed in place
    for i, (m, d) in enumerate(zip(out, msgs, strict=True)):
        assert (m.index, m.role, m.raw) == (i, d["role"], d)
        assert m.content == ("" if d.get("content") is None else _text(d["content"]))
        reasoning = [d[k] for k in ("reasoning_content", "thinking", "reasoning") if d.get(k) is not None]
        assert m.reasoning == (reasoning[0] if reasoning else None)
        assert (m.tool_call_id, m.name) == (d.get("tool_call_id"), d.get("name"))
        calls = d.get("tool_calls", [])
        assert [(c.name, c.id, c.raw) for c in m.tool_calls] == [(c["function"]["name"], c.get("id"), c) for c in calls]
        assert all(c.arguments is r["function"]["arguments"] for c, r in zip(m.tool_calls, calls))


# ---------------------------------------------------------------- cost
def test_plain_messages_are_cheap():
    """A plain message costs about 0.3 µs (measured); the bound leaves room for slow machines."""
    conv = json.loads(json.dumps([{"role": r, "content": "x" * 40} for r in ["user", "assistant"] * 10]))
    per_message = min(timeit.repeat(lambda: check_messages(conv), number=200, repeat=5)) / 200 / len(conv)
    assert per_message < 3e-6, f"{per_message * 1e6:.2f} µs per plain message"


def test_every_error_says_how_to_fix_it():
    """Each reason's message says what it expected or how to fix it."""
    cases = [[user(), "x"], [{"role": "bot", "content": "x"}], [{"role": "user"}],
             [{"role": "user", "content": [{"type": "image"}]}], [calling("x")], [calling(call(arguments="{"))],
             [calling(call(), call())], [result("zz")], [calling(call()), result(5)],
             [{"role": "assistant", "content": "x", "reasoning": 1}]]
    for msgs in cases:
        with pytest.raises(MessageError) as info:
            check_messages(msgs)
        assert re.search(r"expected|must be|Give|Fix|Rename|Write|Drop|send|Map|Flatten|Move", str(info.value)), str(info.value)
