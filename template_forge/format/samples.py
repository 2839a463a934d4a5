"""Seeded sample conversations for ``tforge check``: plain chats and agentic ones.

Plain samples cover the domain chat templates share: an optional system message first
(absent, empty, padded or plain), then 1–6 alternating user/assistant turns ending with
either role, with padded, empty, unicode, brace and Jinja-looking content.

Agentic samples come in three kinds, each drawn only where the spec or the template can
say something about it:

- ``tools``: a plain chat with tool definitions (``apply_chat_template(tools=...)``);
- ``tool_calls``: rounds of a user turn, assistant tool calls (one, or two or three in
  parallel; arguments as objects and as JSON strings, nested, unicode, quotes, braces),
  one ``tool`` result per call (with ``tool_call_id`` and ``name``) and an answer, the last
  round sometimes cut at the user turn or at the results; reasoning present or absent;
- ``reasoning``: a plain chat whose answers carry ``reasoning_content`` or not.

The same ``seed`` always gives the same samples.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

#: Sample kinds, plain first; the label is how ``tforge check`` counts them.
KINDS = {"plain": "plain", "tools": "with tools", "tool_calls": "with tool calls", "reasoning": "with reasoning"}
#: Share of the samples that are agentic, when any agentic kind is drawn.
AGENTIC_SHARE = 0.4

SAMPLE_TEXTS = (
    "Hello!", "What is 2+2?", "2+2 is 4.", "  padded both sides  ", "\nleading newline", "trailing newline\n",
    "", " ", "line one\nline two", "tab\there", "unicode: 日本語, émoji 🤖", "braces {x} {{ y }}",
    "{% if true %}jinja-looking{% endif %}", "quotes ' \" and \\ backslash", "</s> and <|eot_id|> as text",
)
SYSTEM_TEXTS = ("", "  Be brief.  ", "You are a helpful assistant.")


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


#: Tool definitions: nested parameters, enums, arrays, unicode, quotes and braces in descriptions.
TOOLS = (
    _function("get_weather", "Current weather in a city.", {
        "city": {"type": "string", "description": 'City name, e.g. "Paris"'},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
    _function("search", "Search the web: {query} → results 🔎", {
        "q": {"type": "string", "description": "Query text"}, "limit": {"type": "integer"}}, ["q"]),
    _function("calc_2", "Evaluate 'a+b' with quotes \" and \\ backslash.", {
        "expr": {"type": "string"},
        "opts": {"type": "object", "properties": {"precision": {"type": "integer"},
                                                  "mode": {"type": "string", "enum": ["exact", "approx"]}}}}, ["expr"]),
    _function("lookup", "日本語の辞書を引く", {"words": {"type": "array", "items": {"type": "string"}}}, []),
)
ARGUMENTS = (
    {"city": "Paris"}, {"city": "São Paulo", "unit": "celsius"}, {},
    {"q": 'braces {x} {{ y }} and "quotes"', "limit": 3},
    {"expr": "2+2", "opts": {"precision": 2, "mode": "exact", "tags": ["a", "ключ"]}},
    {"words": ["日本語", "émoji 🤖"], "q": "{% if true %}x{% endif %}"},
    {"q": "back\\slash\nnewline", "nested": {"a": [1, {"b": None}], "ok": True, "x": 0.5}},
)
RESULTS = ("18°C and sunny", '{"temperature": 18, "unit": "celsius"}', "", "line one\nline two",
           "braces {x} {{ y }}", "日本語 🤖", "  padded  ")
REASONING = ("Let me think.", "\nThe user wants the weather.\n", "  padded  ", "unicode 日本語", "",
             "braces {x} and </s>")
CALL_CONTENTS = ("", "Let me check.", "\n")


@dataclass(frozen=True)
class Sample:
    """One sample: its kind (a key of :data:`KINDS`), messages and tool definitions."""

    kind: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


def describe_sample(index: int, kind: str, add_generation_prompt: bool) -> str:
    """How messages and errors name one render of a sample.

    Examples:
        >>> describe_sample(3, "tool_calls", True)
        'sample 3 (with tool calls, with generation prompt)'
    """
    return (f"sample {index} ({KINDS.get(kind, kind)}, "
            f"{'with' if add_generation_prompt else 'without'} generation prompt)")


def sample_conversations(n: int, *, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` deterministic plain sample conversations (same ``seed``, same samples).

    Examples:
        >>> convs = sample_conversations(24)
        >>> sorted({len(c) for c in convs})
        [1, 2, 3, 4, 5, 6, 7]
        >>> convs[6][0]
        {'role': 'system', 'content': ''}
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = 1 + i % 6 if i < 24 else rng.randint(1, 6)
        system_kind = (i // 6) % 4 if i < 24 else rng.randrange(4)  # none, empty, padded, plain
        msgs = [{"role": "user" if t % 2 == 0 else "assistant", "content": rng.choice(SAMPLE_TEXTS)}
                for t in range(turns)]
        if system_kind:
            msgs.insert(0, {"role": "system", "content": SYSTEM_TEXTS[system_kind - 1]})
        out.append(msgs)
    return out


def draw_samples(n: int, *, seed: int = 0, kinds: tuple[str, ...] = ()) -> list[Sample]:
    """``n`` samples: plain ones, and :data:`AGENTIC_SHARE` of them agentic, spread evenly
    over ``kinds`` (``tools``, ``tool_calls``, ``reasoning``); all plain when ``kinds`` is empty.

    Examples:
        >>> samples = draw_samples(10, kinds=("tools", "tool_calls"))
        >>> [s.kind for s in samples]
        ['plain', 'plain', 'plain', 'plain', 'plain', 'plain', 'tools', 'tool_calls', 'tools', 'tool_calls']
        >>> samples[7].messages[1]["tool_calls"][0]["function"]["name"]
        'get_weather'
    """
    unknown = [k for k in kinds if k not in KINDS or k == "plain"]
    if unknown:
        raise ValueError(f"unknown sample kind {unknown[0]!r}; the agentic kinds are tools, tool_calls, reasoning.")
    agentic = round(n * AGENTIC_SHARE) if kinds else 0
    out = [Sample("plain", m) for m in sample_conversations(n - agentic, seed=seed)]
    rng = random.Random(f"agentic:{seed}")
    for i in range(agentic):
        kind = kinds[i % len(kinds)]
        out.append(_DRAW[kind](rng, i // len(kinds), tools_read="tools" in kinds))
    return out


def _tools(rng: random.Random, i: int) -> list[dict]:
    """1–3 definitions, the first ones in order (so early samples are alike), then at random."""
    if i < len(TOOLS):
        return list(TOOLS[: 1 + i % 3])
    return rng.sample(TOOLS, rng.randint(1, 3))


def _system(rng: random.Random, i: int) -> list[dict]:
    which = i % 4 if i < 8 else rng.randrange(4)
    return [{"role": "system", "content": SYSTEM_TEXTS[which - 1]}] if which else []


def _draw_tools(rng: random.Random, i: int, *, tools_read: bool) -> Sample:
    turns = 1 + i % 4 if i < 8 else rng.randint(1, 4)
    msgs = [{"role": "user" if t % 2 == 0 else "assistant", "content": rng.choice(SAMPLE_TEXTS)}
            for t in range(turns)]
    return Sample("tools", _system(rng, i) + msgs, _tools(rng, i))


def _draw_reasoning(rng: random.Random, i: int, *, tools_read: bool) -> Sample:
    turns = 2 + i % 4 if i < 8 else rng.randint(1, 6)
    msgs: list[dict[str, Any]] = []
    for t in range(turns):
        msg = {"role": "user" if t % 2 == 0 else "assistant", "content": rng.choice(SAMPLE_TEXTS)}
        if t % 2 and rng.random() < 0.6:
            msg["reasoning_content"] = rng.choice(REASONING)
        msgs.append(msg)
    return Sample("reasoning", _system(rng, i) + msgs)


class _Ids:
    """Call ids of nine letters and digits (Mistral's templates refuse any other)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def __call__(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=9))


def _call(rng: random.Random, name: str, as_string: bool, new_id) -> dict:
    args: Any = rng.choice(ARGUMENTS)
    if as_string:
        args = json.dumps(args, ensure_ascii=rng.random() < 0.5)
    return {"id": new_id(), "type": "function", "function": {"name": name, "arguments": args}}


def _draw_tool_calls(rng: random.Random, i: int, *, tools_read: bool) -> Sample:
    """Early samples walk the shapes in order: one call then two, then three in parallel;
    arguments as objects then as strings; ending at the answer, then at the results."""
    early = i < 12
    tools = _tools(rng, i)
    names = [t["function"]["name"] for t in tools]
    new_id = _Ids(rng)
    msgs = _system(rng, i)
    rounds = 1 if early else rng.randint(1, 3)
    for r in range(rounds):
        msgs.append({"role": "user", "content": rng.choice(SAMPLE_TEXTS)})
        for _ in range(1 if early else rng.randint(0, 2)):
            width = 1 + i % 3 if early else rng.randint(1, 3)
            as_string = (i // 3) % 2 == 1 if early else rng.random() < 0.5
            calls = [_call(rng, rng.choice(names), as_string, new_id) for _ in range(width)]
            turn = {"role": "assistant", "content": rng.choice(CALL_CONTENTS), "tool_calls": calls}
            if rng.random() < 0.3:
                turn["reasoning_content"] = rng.choice(REASONING)
            msgs.append(turn)
            msgs += [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"],
                      "content": rng.choice(RESULTS)} for c in calls]
        answer = {"role": "assistant", "content": rng.choice(SAMPLE_TEXTS)}
        if rng.random() < 0.3:
            answer["reasoning_content"] = rng.choice(REASONING)
        msgs.append(answer)
    if ((i // 6) % 2 == 1 if early else rng.random() < 0.3) and len(msgs) > 2:
        msgs.pop()  # end at the results (or the user turn): a prompt for the next answer
    given = tools_read and (early or rng.random() < 0.8)
    return Sample("tool_calls", msgs, tools if given else None)


_DRAW = {"tools": _draw_tools, "tool_calls": _draw_tool_calls, "reasoning": _draw_reasoning}
