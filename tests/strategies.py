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
