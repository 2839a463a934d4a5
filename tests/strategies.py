"""Hypothesis strategies: message contents, conversations, and whole specs."""

from __future__ import annotations

from hypothesis import strategies as st

# Text that breaks naive templating: Jinja syntax, format braces, quotes, backslashes,
# newlines of every kind, special-token strings, padding, unicode.
TRICKY = [
    "", " ", "  padded  ", "\n\nlead and trail\n", "\t tab", "{{ x }}", "{% if true %}y{% endif %}",
    "{#c#}", "{%- raw -%}", "}}", "{{", "{instruction}", "{system}", "'\"\\", "\\n", "\r\n", "\r",
    "<|eot_id|>", "[INST]", "</s>", "<s>", "日本語", "emoji 🤖", "\u2028x\u2029", "\x00\x1f", "a\u00a0b",
]

contents = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(["", " ", "\n", "  "]),
              st.text("ab {}%#'\"\\\n", max_size=8), st.sampled_from(["", " ", "\n", "\t "])),
)


@st.composite
def conversations(draw, *, system: str = "maybe", alternate: bool | None = None, min_turns: int = 1,
                  max_turns: int = 6):
    """Conversations of the domain the official templates share.

    system: "maybe" (optional message 0), "always", "never", "anywhere" (one, at a random index)
        or "many" (zero to three, anywhere).
    alternate: True → user/assistant/user…, False → any order, None → either.
    """
    n = draw(st.integers(min_turns, max_turns))
    if alternate is None:
        alternate = draw(st.booleans())
    if alternate:
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(n)]
    else:
        roles = draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=n, max_size=n))
    msgs = [{"role": r, "content": draw(contents)} for r in roles]
    if system == "many":
        for _ in range(draw(st.integers(0, 3))):
            msgs.insert(draw(st.integers(0, len(msgs))), {"role": "system", "content": draw(contents)})
        return msgs
    has_system = system in ("always", "anywhere") or (system == "maybe" and draw(st.booleans()))
    if has_system:
        where = draw(st.integers(0, len(msgs))) if system == "anywhere" else 0
        msgs.insert(where, {"role": "system", "content": draw(contents)})
    return msgs


# ---------------------------------------------------------------- specs
literal_bits = st.sampled_from([
    "", "<s>", "[INST] ", " [/INST]", "\n", "\n\n", "<|eot_id|>", "{{", "}}", "{{ role }}", "{%", "%}",
    "{#", "#}", "'", '"', "\\", "\\n", "\r\n", "\t", "｜User｜", "### ", " ", "<<SYS>>\n", "\u2028",
])
lits = st.lists(literal_bits, max_size=3).map("".join)


def _role(draw, extra_fields: list[str]) -> str:
    fields = ["{instruction}"] + extra_fields
    fields = draw(st.permutations(fields))

    def lit():  # role strings follow str.format rules: literal braces are doubled
        return draw(lits).replace("{", "{{").replace("}", "}}")

    parts = [lit()]
    for f in fields:
        parts += [f, lit()]
    return "".join(parts)


@st.composite
def spec_dicts(draw):
    """Valid prompt-format mappings covering every field combination."""
    placement = draw(st.sampled_from([None, "separate", "in_place", "first_user", "last_user", "final_user", "drop",
                                      "reject"]))
    legacy_in_user = draw(st.booleans()) if placement is None else None
    in_user = placement in ("first_user", "last_user", "final_user") or (placement is None and legacy_in_user)
    variables = draw(st.dictionaries(st.sampled_from(["date_string", "who", "x1"]), lits, max_size=2))
    var_fields = ["{" + v + "}" for v in variables]

    def maybe_vars():
        return [f for f in var_fields if draw(st.booleans())]

    d = {
        "system": _role(draw, maybe_vars()),
        "assistant": _role(draw, maybe_vars()),
        "trailing_assistant": draw(lits),
        "bos": draw(lits),
        "default_system_message": draw(st.sampled_from(["", "Default sys.", "  padded default  "])),
        "add_system_tags_even_if_message_is_empty": draw(st.booleans()),
        "strip_whitespace": draw(st.booleans()),
        "empty_system": draw(st.sampled_from(["auto", "render", "drop"])),
        "require_alternation": draw(st.booleans()),
        "final_suffix": draw(st.sampled_from(["", "<|endoftext|>", "\n"])),
        "variables": variables,
    }
    strip_user_choices = [None, True, False]
    if in_user:
        d["user"] = draw(st.sampled_from(["{system}{instruction}", "split"]))
        if d["user"] == "split":
            d["user"] = _role(draw, ["{system}"] + maybe_vars())
        else:
            esc = lambda t: t.replace("{", "{{").replace("}", "}}")  # noqa: E731
            d["user"] = esc(draw(lits)) + "{system}{instruction}" + esc(draw(lits))
            strip_user_choices.append("with_system")
    else:
        d["user"] = _role(draw, maybe_vars())
    if placement is not None:
        d["system_placement"] = placement
    else:
        d["system_in_user"] = legacy_in_user
        if legacy_in_user:
            d["system_in_last_user"] = draw(st.booleans())
    strip = {k: v for k, v in {
        "system": draw(st.sampled_from([None, True, False])),
        "user": draw(st.sampled_from(strip_user_choices)),
        "assistant": draw(st.sampled_from([None, True, False])),
    }.items() if v is not None}
    if strip:
        d["strip"] = strip
    return d


# ---------------------------------------------------------------- agentic conversations
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.sampled_from(TRICKY), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "ключ", "{x}", "q\""]),
                                                                        inner, max_size=3)),
    max_leaves=6)
tool_names = st.sampled_from(["get_weather", "search", "calc_2", "lookup"])


@st.composite
def tool_schemas(draw):
    """1-3 OpenAI function schemas with nested, unicode parameters."""
    out = []
    for name in draw(st.lists(tool_names, min_size=1, max_size=3, unique=True)):
        props = draw(st.dictionaries(st.sampled_from(["city", "q", "n", "opts"]), st.fixed_dictionaries(
            {"type": st.sampled_from(["string", "integer", "object", "array"]), "description": contents}), max_size=3))
        out.append({"type": "function", "function": {
            "name": name, "description": draw(contents),
            "parameters": {"type": "object", "properties": props, "required": sorted(props)[:1]}}})
    return out


@st.composite
def agentic_conversations(draw, *, reasoning: bool = True, max_calls: int = 2, string_arguments: bool = True):
    """(messages, tools): optional system, then rounds of a user turn, zero or more tool-call
    rounds (an assistant turn with 1..max_calls calls, then one tool result per call) and an
    answer, sometimes with reasoning; the last round may end early (at the user or a result)."""
    tools = draw(tool_schemas())
    names = [t["function"]["name"] for t in tools]
    msgs = [{"role": "system", "content": draw(contents)}] if draw(st.booleans()) else []
    ids = iter(f"call{k:05d}" for k in range(10**5))
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": "user", "content": draw(contents)})
        for _ in range(draw(st.integers(0, 2))):
            calls = []
            for _ in range(draw(st.integers(1, max_calls))):
                args = draw(st.dictionaries(st.sampled_from(["city", "q", "n"]), json_values, max_size=3))
                if string_arguments and draw(st.booleans()):
                    import json

                    args = json.dumps(args, ensure_ascii=draw(st.booleans()))
                calls.append({"id": next(ids), "type": "function",
                              "function": {"name": draw(st.sampled_from(names)), "arguments": args}})
            turn = {"role": "assistant", "content": draw(st.sampled_from(["", "Let me check.", "\n"])),
                    "tool_calls": calls}
            if reasoning and draw(st.booleans()):
                turn["reasoning_content"] = draw(contents)
            msgs.append(turn)
            msgs += [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"], "content": draw(contents)}
                     for c in calls]
        answer = {"role": "assistant", "content": draw(contents)}
        if reasoning and draw(st.booleans()):
            answer["reasoning_content"] = draw(contents)
        msgs.append(answer)
    cut = draw(st.integers(0, 2))  # sometimes end at the last user turn or tool result (a prompt)
    if cut and len(msgs) > 2:
        msgs = msgs[:-1]
    return msgs, (tools if draw(st.integers(0, 4)) else None)


# ---------------------------------------------------------------- gpt-oss (harmony)
@st.composite
def harmony_conversations(draw):
    """agentic_conversations with one call per turn, the reasoning under `thinking` or
    `reasoning_content` (transformers passes both to the template as `thinking`), and
    mostly only one of content and reasoning before a call (both is refused by both)."""
    messages, tools = draw(agentic_conversations(max_calls=1))
    out = []
    for msg in messages:
        msg = dict(msg)
        if "reasoning_content" in msg and draw(st.booleans()):
            msg["thinking"] = msg.pop("reasoning_content")
        if msg.get("tool_calls") and msg["content"] and (msg.get("thinking") or msg.get("reasoning_content")) \
                and draw(st.integers(0, 4)):
            msg["content"] = ""
        out.append(msg)
    return out, tools


@st.composite
def plain_with_reasoning(draw):
    """conversations(system="maybe") whose answers sometimes carry reasoning (`thinking` or
    `reasoning_content`, any text)."""
    messages = draw(conversations(system="maybe"))
    for msg in messages:
        if msg["role"] == "assistant" and draw(st.booleans()):
            msg[draw(st.sampled_from(["thinking", "reasoning_content"]))] = draw(contents)
    return messages
# ---------------------------------------------------------------- agentic specs
#: Raw (unescaped) text for agentic role strings: Jinja-looking text, quotes, backslashes,
#: newlines, unicode, and the tags and end-of-turn strings that stop strings and
#: ``from_content`` look for.
agentic_bits = st.sampled_from([
    "", " ", "\n", "\n\n", "{{ x }}", "{% raw %}", "{%- endraw -%}", "{#", "}}", "{", "'", '"', "\\", "\\n", "\r\n",
    "\t", "<think>", "</think>", "<tool_call>", "<|im_end|>", "<|eot_id|>", "</s>", "日本", "🤖", "\u2028", "[T]",
])
agentic_lits = st.lists(agentic_bits, max_size=3).map("".join)
STOPS = ["<|eot_id|>", "<|im_end|>", "</s>", "\n", "'"]
#: Typed variables the agentic specs add: a boolean switch and a choice.
TYPED_VARIABLES = {"think": st.booleans(), "effort": st.sampled_from(["low", "{x}", "it's"])}


def _esc(text: str) -> str:
    """Raw text as a role-string literal (``str.format`` rules: braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def _agentic_role(draw, required: list[str], optional: list[str] = (), variables: list[str] = ()) -> str:
    """A role string: ``required`` fields, some of ``optional`` and of ``variables`` (each at
    most once), in any order, between awkward literals."""
    fields = list(required) + [f for f in list(optional) + list(variables) if draw(st.booleans())]
    parts = [_esc(draw(agentic_lits))]
    for f in draw(st.permutations(fields)):
        parts += ["{" + f + "}", _esc(draw(agentic_lits))]
    return "".join(parts)


def _suffix(draw, stops: list[str], names: list[str]) -> str:
    """An assistant suffix, often holding a stop string with text after it (trained up to the stop)."""
    stop = _esc(draw(st.sampled_from(stops))) if stops and draw(st.booleans()) else ""
    return _agentic_role(draw, [], [], names) + stop + _esc(draw(agentic_lits))


def _typed_variables(draw) -> dict:
    out = {}
    if draw(st.booleans()):
        out["think"] = draw(st.booleans())
    if draw(st.booleans()):
        choices = draw(st.lists(st.sampled_from(["low", "{x}", "it's"]), min_size=1, unique=True))
        out["effort"] = {"default": draw(st.sampled_from(choices)), "choices": choices}
    if draw(st.integers(0, 3)) == 0:  # a clock whose text does not depend on the time, so renders compare
        out["today"] = {"strftime": draw(st.sampled_from(["%%d", "'%%'\\", ""]))}
    return out


def _json_options(draw) -> dict:
    options = {"indent": draw(st.sampled_from([None, 0, 2])),
               "separators": draw(st.sampled_from([None, [",", ":"], [", ", ": "], ["'", "\\\n"]])),
               "ensure_ascii": draw(st.booleans()), "sort_keys": draw(st.booleans())}
    return {k: v for k, v in options.items() if v is not None and draw(st.booleans())}


def _tools_block(draw, d: dict, names: list[str]) -> dict:
    """`tools`: a tools system block with the definitions, or the block with the definitions in a
    user turn, or only the user turn (the only choice when the system text goes into user turns,
    where `tools.user` takes `{system}` as `user` does)."""
    in_user = d.get("system_placement") in ("first_user", "last_user", "final_user") or d.get("system_in_user")
    where = "user" if in_user else draw(st.sampled_from(["system", "user", "both"]))
    out = {"each": _agentic_role(draw, ["tool"]), "separator": draw(agentic_lits)}
    if where != "user":
        out["system"] = _agentic_role(draw, ["instruction"] + (["tools"] if where == "system" else []), [], names)
        out["system_text"] = _agentic_role(draw, ["instruction"], [], names)
    if where != "system":
        if d.get("strip", {}).get("user") == "with_system":  # {system}{instruction} side by side
            rest = _agentic_role(draw, ["tools"], [], names)
            out["user"] = draw(st.sampled_from([rest + "{system}{instruction}", "{system}{instruction}" + rest]))
        else:
            out["user"] = _agentic_role(draw, ["instruction", "tools"] + (["system"] if in_user else []), [], names)
        out["user_turn"] = draw(st.sampled_from(["first", "last"]))
    if draw(st.booleans()):
        out["json"] = _json_options(draw)
    return {k: v for k, v in out.items() if draw(st.integers(0, 3)) or k in ("system", "user", "each")}


def _tool_calls_block(draw, names: list[str], head: str) -> dict:
    out = {"each": _agentic_role(draw, [], ["name", "arguments", "id"], names), "separator": draw(agentic_lits),
           "after_content": draw(agentic_lits), "arguments": draw(st.sampled_from(["json", "as_given"])),
           "content": _agentic_role(draw, ["instruction"], [], names)}
    if draw(st.booleans()):  # its own assistant template, often with the plain one's header
        tail = _agentic_role(draw, ["calls"], ["instruction"], names) + _suffix(draw, STOPS, [])
        out["assistant"] = (_esc(head) + tail) if draw(st.booleans()) else _agentic_role(draw, ["calls"], ["instruction"])
    if draw(st.booleans()):
        out["max_calls"] = draw(st.integers(1, 2))
    if draw(st.booleans()):
        out["json"] = _json_options(draw)
    return {k: v for k, v in out.items() if draw(st.integers(0, 3)) or k == "each"}


def _reasoning_block(draw, names: list[str]) -> dict:
    out = {"block": _agentic_role(draw, ["instruction"], [], names),
           "keep": draw(st.sampled_from(["all", "after_last_user", "never"])),
           "empty": draw(st.sampled_from(["never", "final", "always"])),
           "strip": draw(st.sampled_from(["", "\n", " \n"])), "content_lstrip": draw(st.sampled_from(["", "\n", " "]))}
    if draw(st.booleans()):
        o, c = draw(st.sampled_from([("<think>", "</think>"), ("<s>", "</s>"), ("[T]", "{{")]))
        out["from_content"] = {"open": o, "close": c}
    return {k: v for k, v in out.items() if draw(st.integers(0, 3)) or k == "block"}


@st.composite
def agentic_spec_dicts(draw, *, prefix: bool = False):
    """Valid prompt-format mappings with the agentic fields (tools, tool calls, tool results,
    reasoning, stop strings, final_assistant, typed variables, generation_prompt
    alternatives) in random combinations, on top of :func:`spec_dicts`' plain fields.

    prefix: lean towards specs that promise prefix preservation with the generation prompt
        (no final suffix, no final_assistant, no alternatives, the generation prompt the
        assistant header); ``render.promises_prefix`` has the last word.
    """
    d = draw(spec_dicts())
    d["variables"] = {**d["variables"], **_typed_variables(draw)}
    names = [k for k, v in d["variables"].items() if not isinstance(v, bool)]  # those a role string may name
    head = draw(agentic_lits)  # the assistant header, raw (spec_dicts' assistant, with variables anywhere, at times)
    d["stop"] = draw(st.lists(st.sampled_from(STOPS), max_size=2, unique=True))
    if draw(st.integers(0, 3)):
        d["assistant"] = _esc(head) + "{instruction}" + _suffix(draw, d["stop"], names)
    if draw(st.integers(0, 3)):
        d["tools"] = _tools_block(draw, d, names)
    if draw(st.integers(0, 7)):  # mostly there: a format without them refuses most agentic conversations
        d["tool_calls"] = _tool_calls_block(draw, names, head)
    if draw(st.integers(0, 7)):
        d["tool_results"] = {"each": _agentic_role(draw, ["instruction"], ["name", "id"], names),
                             "group": _agentic_role(draw, ["instruction"], [], names),
                             "content": draw(st.sampled_from(["text", "json"]))}
    if draw(st.booleans()):
        d["reasoning"] = _reasoning_block(draw, names)
    if prefix:
        d.update(final_suffix="", trailing_assistant=head)
        if head and "tool_calls" in d and draw(st.booleans()):
            _calls_header_in_prompt(draw, d, head)
        return d
    if draw(st.integers(0, 3)) == 0:
        d["final_assistant"] = _esc(head) + _agentic_role(draw, ["instruction"], [], names) + _suffix(draw, d["stop"], [])
    d["trailing_assistant"] = draw(st.sampled_from([d["trailing_assistant"], head, head + draw(agentic_lits)]))
    switches = [k for k in d["variables"] if k in TYPED_VARIABLES]
    if switches and draw(st.booleans()):
        d["generation_prompt"] = [_alternative(draw, d, switches, head) for _ in range(draw(st.integers(1, 2)))]
    return d


def _calls_header_in_prompt(draw, d: dict, head: str) -> None:
    """Qwen2.5's shape: the tool-call turn's header is shorter than the generation prompt, and
    the rest of the prompt starts what follows it (the content, each call, the reasoning), at times."""
    cut = draw(st.integers(0, len(head) - 1))
    lead = _esc(head[cut:])
    tc = d["tool_calls"]
    tc["assistant"] = _esc(head[:cut]) + draw(st.sampled_from(["{instruction}{calls}", "{calls}"])) + _esc(draw(agentic_lits))
    for key in [k for k in ("content", "each") if draw(st.integers(0, 4))]:
        tc[key] = lead + tc.get(key, "{instruction}")
    if "reasoning" in d and draw(st.booleans()):
        d["reasoning"]["block"] = lead + d["reasoning"]["block"]


def _alternative(draw, d: dict, switches: list[str], head: str) -> dict:
    """A generation_prompt alternative: sometimes the header and an empty reasoning block
    (Qwen3's thinking switch), so the block is prompt."""
    when = {k: draw(TYPED_VARIABLES[k] if k == "think" else st.sampled_from(d["variables"][k]["choices"]))
            for k in draw(st.lists(st.sampled_from(switches), min_size=1, unique=True))}
    empty = ""
    if "reasoning" in d:
        from template_forge.format.roles import parse_role_template

        block = parse_role_template(d["reasoning"]["block"])
        empty = "".join(p.text if p.field is None else "" if p.field == "instruction" else
                        _variable_default(d["variables"][p.field]) for p in block.pieces)
    text = draw(st.sampled_from([head, head + empty, draw(agentic_lits)]))
    return {"when": when, "text": text}


def _variable_default(v) -> str:
    if isinstance(v, dict) and "strftime" in v:
        from datetime import datetime

        return datetime.now().strftime(v["strftime"])
    return v["default"] if isinstance(v, dict) else v


@st.composite
def varied_agentic_conversations(draw):
    """:func:`agentic_conversations` in the other shapes the message model takes: Llama's
    ``ipython`` results, null content beside tool calls, the reasoning under ``thinking`` or
    ``reasoning``, results and calls without ``name`` or ``id``, an empty ``tools`` list."""
    import copy

    messages, tools = draw(agentic_conversations())
    messages = copy.deepcopy(messages)
    dropped = set()  # call ids taken away (a result may not name an id no call has: render() refuses that)
    for m in messages:
        if m["role"] == "tool" and draw(st.integers(0, 3)) == 0:
            m["role"] = "ipython"
        if m["role"] in ("tool", "ipython"):
            for key in ("name", "tool_call_id"):
                gone = key == "tool_call_id" and m.get(key) in dropped
                if gone or (key in m and draw(st.integers(0, 3)) == 0):
                    del m[key]
        if m.get("tool_calls"):
            if m["content"] == "" and draw(st.booleans()):
                m["content"] = None
            for call in m["tool_calls"]:
                if draw(st.integers(0, 3)) == 0:
                    dropped.add(call.pop("id"))
        if "reasoning_content" in m and draw(st.booleans()):
            m[draw(st.sampled_from(["thinking", "reasoning"]))] = m.pop("reasoning_content")
        elif m["role"] == "assistant" and m["content"] is not None and draw(st.integers(0, 3)) == 0:
            m["content"] = draw(st.sampled_from(["<think>", ""])) + draw(contents) + "</think>" + m["content"]  # Qwen3's shape
    return messages, ([] if tools is None and draw(st.booleans()) else tools)
