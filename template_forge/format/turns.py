"""The turns of a rendered conversation: system blocks, user turns, assistant turns (with
their reasoning and tool calls) and tool results, each appended to a
:class:`~template_forge.format.rendered._Builder` as typed segments.

:func:`template_forge.format.render.render` decides which turn goes where; this module
decides what each turn's text is. Message text (contents, reasoning, tool-call names and
arguments, tool definitions) is recorded as content spans: special-token strings inside it
stay text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from template_forge.errors import RenderError
from template_forge.format.agentic import Json
from template_forge.format.messages import Message
from template_forge.format.rendered import _Builder
from template_forge.format.roles import RoleTemplate, fill
from template_forge.format.spec import Spec


# --------------------------------------------------------------------------- system and user
def system_block(spec: Spec, text: str, values: Mapping[str, Any],
                 template: RoleTemplate | None = None) -> tuple[str, tuple[int, int]]:
    """The filled system template and the span of the system text inside it."""
    before, after = (template or spec.system).around("instruction")
    head = fill(before, values)
    return head + text + fill(after, values), (len(head), len(head) + len(text))


def add_system(out: _Builder, spec: Spec, text: str, index: int | None, values: Mapping[str, Any],
               template: RoleTemplate | None = None) -> None:
    block, span = system_block(spec, text, values, template)
    out.add("system", block, index, content=span)


def add_keyed_system(out: _Builder, spec: Spec, text: str, msg: Message, values: Mapping[str, Any]) -> None:
    """A system message carrying ``system_key.key``: its template, the key's text where
    ``{key}`` is (a tool-definitions segment: message text, never trained)."""
    key, template = spec.system_key.key, spec.system_key.template
    value = msg.raw[key]
    if not isinstance(value, str):
        raise RenderError(f"`{key}` of this system message must be a string (the template writes it as text), found "
                          f"{type(value).__name__}. Give it as a string, or leave it out.", message_index=msg.index)
    for piece in template.pieces:
        if piece.field == "instruction":
            out.add("system", text, msg.index, content=(0, len(text)))
        elif piece.field == key:
            out.add("tools", value, msg.index, content=(0, len(value)))
        else:
            out.add("system", piece.text if piece.field is None else values[piece.field], msg.index)


def add_tools_system(out: _Builder, spec: Spec, text: str | None, index: int | None, values: Mapping[str, Any],
                     definitions: str) -> None:
    """``tools.system`` in place of the system template: the system text (``None``: there is
    none) wrapped by ``tools.system_text``, and the tool definitions where ``{tools}`` is."""
    add_wrapped_system(out, spec, spec.tools.system, spec.tools.system_text, text, index, values, definitions)


def add_wrapped_system(out: _Builder, spec: Spec, template: RoleTemplate, wrapper: RoleTemplate, text: str | None,
                       index: int | None, values: Mapping[str, Any], definitions: str = "") -> None:
    """A system template rendered whether or not there is a system text: its ``{instruction}``
    is the text (``None``: there is none, and it is empty) written by ``wrapper``."""
    inner = system_block(spec, text, values, wrapper) if text is not None else ("", (0, 0))
    for piece in template.pieces:
        if piece.field == "instruction":
            out.add("system", inner[0], index, content=inner[1])
        elif piece.field == "tools":
            out.add("tools", definitions, None, content=(0, len(definitions)))
        else:
            out.add("system", piece.text if piece.field is None else values[piece.field], index)


def definitions(spec: Spec, tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool definitions as the format writes them: ``each`` per tool, joined by ``separator``."""
    t = spec.tools
    return t.separator.join(fill(t.each.pieces, {"tool": t.writer.dumps(tool)}) for tool in tools)


def add_user(out: _Builder, spec: Spec, msg: Message, values: Mapping[str, Any], *, system_text: str | None,
             sys_index: int | None, around: tuple[str, str], tools: str | None = None) -> None:
    """A user turn; ``around`` is the user template before/after ``{instruction}``, filled, with
    no system text; ``tools`` the definitions when this turn takes them (``tools.user``)."""
    content, index = msg.content, msg.index
    sys_part, sys_span = system_block(spec, system_text, values) if system_text is not None else ("", (0, 0))
    if spec.strip_user == "with_system":
        # Strip the system block and the user text as one string (Llama 2's `content.strip()`).
        merged = sys_part + content
        lead = len(merged) - len(merged.lstrip())
        kept = merged.strip()
        cut = max(len(sys_part) - lead, 0)
        sys_part, content = kept[:cut], kept[cut:]
        sys_span = (max(sys_span[0] - lead, 0), min(max(sys_span[1] - lead, 0), len(sys_part)))
    elif spec.strip_user or (tools is not None and spec.tools.strip):
        content = content.strip()
    if not sys_part and tools is None:  # the common case: one segment, the content inside it
        before, after = around
        out.add("user", before + content + after, index, content=(len(before), len(before) + len(content)))
        return
    for piece in (spec.tools.user if tools is not None else spec.user).pieces:
        if piece.field == "system":
            out.add("system", sys_part, sys_index, content=sys_span)
        elif piece.field == "instruction":
            out.add("user", content, index, content=(0, len(content)))
        elif piece.field == "tools":
            out.add("tools", tools, None, content=(0, len(tools)))
        else:
            out.add("user", piece.text if piece.field is None else values[piece.field], index)


# --------------------------------------------------------------------------- tool results
def result_name(msg: Message, calls: Sequence) -> str | None:
    """The tool name of a result, as Gemma 4 resolves it: the last call of the assistant turn
    before whose id is the result's ``tool_call_id``, else the result's own ``name``."""
    found = [c.name for c in calls if c.id == msg.tool_call_id]
    return found[-1] if found else msg.name


def add_tool_results(out: _Builder, spec: Spec, group: Sequence[Message], values: Mapping[str, Any], *,
                     calls: Message | None = None, call_name: str | None = None, final: bool = False) -> None:
    """Consecutive tool results, each written by ``tool_results.each`` (joined by ``separator``),
    inside one ``group`` (``final_group`` when it ends the conversation); ``calls`` is the
    message before the group (whose calls name the results, ``name: call``), ``call_name`` the
    latest tool-call turn's first call (``name: latest_call``)."""
    results = spec.tool_results
    if not results.may_open and group[0].index == 0:
        raise RenderError("this format cannot open a conversation with a tool result (its official template "
                          "writes such a result without its turn header). Put the assistant message that made the "
                          "call before it, or drop the result.", message_index=0)
    if results.name == "latest_call" and call_name is None:
        raise RenderError("this tool result follows no assistant message with tool calls (the format names a result "
                          "after the latest call). Put it right after the turn that makes the call.",
                          message_index=group[0].index)
    made = calls.tool_calls if calls is not None and calls.role == "assistant" else ()
    template = results.final_group if final and results.final_group is not None else results.group
    before, after = template.around("instruction")
    out.add("tool", fill(before, values), group[0].index)
    for k, msg in enumerate(group):
        if k and results.separator:
            out.add("tool", results.separator, msg.index)
        content = Json().dumps(msg.content) if results.content == "json" else msg.content
        name = {"call": lambda: result_name(msg, made), "latest_call": lambda: call_name}.get(
            results.name, lambda: msg.name)()
        fields = {"name": name or "", "id": msg.tool_call_id or ""}
        for piece in results.each.pieces:
            if piece.field == "instruction":
                out.add("tool", content, msg.index, content=(0, len(content)))
            else:
                text = piece.text if piece.field is None else fields.get(piece.field, values.get(piece.field, ""))
                out.add("tool", text, msg.index, content=(0, len(text)) if piece.field in fields else None)
    out.add("tool", fill(after, values), group[-1].index)


# --------------------------------------------------------------------------- assistant turns
#: the fields of an assistant template that are its (trained) body
BODY_FIELDS = ("instruction", "reasoning", "calls")

@dataclass
class _Part:
    kind: str
    text: str
    data: bool = False  # message text (a content span), not template text
    cut: bool = False  # a tokenization break before it (tokenize_apart: a call starts or ends)


def reasoning_of(spec: Spec, msg: Message) -> str | None:
    """A message's reasoning: ``reasoning.keys`` in order, the first non-empty string (as a
    template's ``a or b`` reads them); ``reasoning_content`` is what transformers passes under
    that name (the first of ``reasoning_content``, ``thinking``, ``reasoning`` not null)."""
    keys = spec.reasoning.keys if spec.reasoning is not None else None
    if keys is None:
        return msg.reasoning
    values = (msg.reasoning if k == "reasoning_content" else msg.raw.get(k) for k in keys)
    return next((v for v in values if isinstance(v, str) and v), None)


def split_reasoning(spec: Spec, msg: Message) -> tuple[str | None, str]:
    """The reasoning and the answer: ``reasoning_content``, else (with ``from_content``) the
    text before the closing tag, cut out of the content the way Qwen3's template cuts it."""
    r = spec.reasoning
    reasoning = reasoning_of(spec, msg)
    if msg.tool_calls and spec.tool_calls is not None and spec.tool_calls.content_as == "reasoning":
        # gpt-oss: the text before a call is its analysis; an empty one is none
        if msg.content and reasoning:
            raise RenderError("this assistant message with tool calls has both content and reasoning, and the format "
                              "writes its content as its reasoning. Keep one of them.", message_index=msg.index)
        return (msg.content or reasoning or None), ""
    if r is None or r.from_content is None or r.from_content[1] not in msg.content:
        return reasoning, msg.content
    if reasoning is not None and not r.cut_always:
        return reasoning, msg.content
    open_tag, close_tag = r.from_content
    head, _, _ = msg.content.partition(close_tag)
    reasoning = msg.reasoning if msg.reasoning is not None else head.rstrip("\n").split(open_tag)[-1].lstrip("\n")
    return reasoning, msg.content.split(close_tag)[-1].lstrip(r.answer_lstrip)


def reasoning_shown(spec: Spec, msg: Message, reasoning: str | None, *, last: bool, last_user: int | None,
                    last_answer: int | None = None) -> bool:
    """Whether the turn writes a reasoning block; ``last`` says it is the final turn,
    ``last_answer`` is the index of the last assistant message without tool calls."""
    r = spec.reasoning
    if r is None or r.keep == "never" or (r.turns == "tool_calls" and not msg.tool_calls):
        return False
    if r.keep == "after_last_user" and (last_user is None or msg.index <= last_user):
        return False
    if r.keep == "unanswered":  # the final turn, and calls no answer follows yet
        kept = (last_answer is None or msg.index > last_answer) if msg.tool_calls else last
        if not kept:
            return False
    if r.empty == "given":
        return reasoning is not None
    return bool(reasoning) or r.empty == "always" or (r.empty == "final" and last)


def _body(spec: Spec, msg: Message, values: Mapping[str, Any], *, last: bool, last_user: int | None,
          slots: bool, last_answer: int | None) -> tuple[list[_Part], list[_Part], list[_Part]]:
    """The parts of ``{instruction}`` (reasoning block and content), of ``{calls}`` and of a
    reasoning block written before the turn (``before_turn``); with ``slots`` False (no
    ``tool_calls.assistant``) the calls follow the content in ``{instruction}``."""
    reasoning, content = split_reasoning(spec, msg)
    if spec.strip_assistant:
        content = content.strip()
    parts: list[_Part] = []
    said = content
    if reasoning_shown(spec, msg, reasoning, last=last, last_user=last_user, last_answer=last_answer):
        r = spec.reasoning
        text = (reasoning or "").strip(r.strip) if r.strip else (reasoning or "")
        for piece in r.block.pieces:
            if piece.field == "instruction":
                parts.append(_Part("assistant_reasoning", text, True))
            else:
                parts.append(_Part("assistant_reasoning", piece.text if piece.field is None else values[piece.field]))
        said = content.lstrip(r.content_lstrip) if r.content_lstrip else content
    ahead: list[_Part] = []  # reasoning.before_turn: the block goes before the assistant template
    if spec.reasoning is not None and spec.reasoning.before_turn:
        ahead, parts = parts, []
    calls = _calls(spec, msg, values, content) if msg.tool_calls else []
    tc = spec.tool_calls
    if msg.tool_calls and slots and said:
        before, after = tc.content.around("instruction")
        parts += [_Part("assistant_content", fill(before, values)), _Part("assistant_content", said, True),
                  _Part("assistant_content", fill(after, values))]
    elif not (msg.tool_calls and slots):
        parts.append(_Part("assistant_content", said, True))
    return ((parts, calls) if slots else (parts + calls, [])) + (ahead,)


def _calls(spec: Spec, msg: Message, values: Mapping[str, Any], content: str) -> list[_Part]:
    tc = spec.tool_calls
    if tc.max_calls is not None and len(msg.tool_calls) > tc.max_calls:
        raise RenderError(f"this assistant message has {len(msg.tool_calls)} tool calls; the format takes at most "
                          f"{tc.max_calls} per message. Split the calls over several assistant turns.",
                          message_index=msg.index)
    parts = [_Part("assistant_calls", tc.after_content)] if content else []
    parts.append(_Part("assistant_calls", tc.open))
    for k, call in enumerate(msg.tool_calls):
        if k:
            parts.append(_Part("assistant_calls", tc.separator))
        parts.append(_Part("assistant_calls", "", cut=True))
        if tc.arguments == "string" and not isinstance(call.arguments, str):
            raise RenderError(f"tool call {k} gives its arguments as an object; this format writes them only as a "
                              "JSON string (its official template joins them as text). Give "
                              "`function.arguments` as a JSON string.", message_index=msg.index)
        args = call.arguments if tc.arguments in ("as_given", "string") and isinstance(call.arguments, str) else \
            tc.writer.dumps(call.arguments)
        name = Json().dumps(call.name) if tc.names == "json" else call.name
        fields = {"name": name, "arguments": args, "id": call.id or ""}
        for piece in tc.each.pieces:
            if piece.field in fields:
                parts.append(_Part("assistant_calls", fields[piece.field], True))
            else:
                parts.append(_Part("assistant_calls", piece.text if piece.field is None else values[piece.field]))
    return parts + [_Part("assistant_calls", "", cut=True), _Part("assistant_calls", tc.close)]


def add_assistant(out: _Builder, spec: Spec, msg: Message, values: Mapping[str, Any], *, last: bool,
                  last_user: int | None, generation_prompt: str, last_answer: int | None = None,
                  continued: bool = False, answered: bool = False, before: str = "") -> None:
    """An assistant turn: prefix (after ``before``, the ``assistant_prefix_after`` text), then the
    trained body (reasoning, content, calls) and the suffix up to the stop string, then the
    untrained rest of the suffix. What the generation prompt supplies at inference (an empty
    think block after the header) is prefix. A ``continued`` turn (``continue_assistant_turns``)
    writes no header; the content of an ``answered`` turn with calls waits for its results
    (``tool_calls.after_results``)."""
    tc = spec.tool_calls
    if answered and msg.tool_calls and tc.after_results is not None:
        msg = replace(msg, content="")
    slots = bool(msg.tool_calls and tc is not None and tc.assistant is not None)
    template = tc.assistant if slots else (spec.final_assistant if last and spec.final_assistant else spec.assistant)
    instruction, calls, ahead = _body(spec, msg, values, last=last, last_user=last_user, slots=slots,
                                       last_answer=last_answer)
    reasoning: list[_Part] = []
    if "reasoning" in template.fields():  # `tool_calls.assistant` places the reasoning block itself
        reasoning = [p for p in instruction if p.kind == "assistant_reasoning"]
        instruction = [p for p in instruction if p.kind != "assistant_reasoning"]
    fields = [k for k, p in enumerate(template.pieces) if p.field in BODY_FIELDS]
    head = before + ("" if continued else fill(template.pieces[: fields[0]], values))
    body: list[_Part] = []
    for piece in template.pieces[fields[0] : fields[-1] + 1]:
        if piece.field == "instruction":
            body += instruction
        elif piece.field == "reasoning":
            body += reasoning
        elif piece.field == "calls":
            body += calls
        else:
            body.append(_Part("assistant_content", piece.text if piece.field is None else values[piece.field]))
    if ahead:  # the reasoning is a message of its own: the model writes the turn's header after it
        head, body = "", ahead + [_Part("assistant_content", head)] + body
    head, body = _generation_prompt_is_prefix(head, body, generation_prompt, rest=spec.train_header_rest)
    trained, end = stop_split(spec, template.pieces[fields[-1] + 1 :], values)
    out.add("assistant_prefix", head, msg.index)
    start = out.pos
    for part in body:
        if part.cut:
            out.cut()
        out.add(part.kind, part.text, msg.index, content=(0, len(part.text)) if part.data else None)
    out.add("assistant_suffix", trained, msg.index)
    out.turns.append((msg.index, start, out.pos))
    out.add("assistant_end", end, msg.index)


def add_deferred_content(out: _Builder, spec: Spec, msg: Message, values: Mapping[str, Any]) -> None:
    """The content of a turn with calls, after the results that answer it: ``tool_calls.after_results``
    filled, trained up to its stop string, written when the content is not empty (before
    stripping, as Gemma 4 tests it)."""
    if not msg.content:
        return
    content = msg.content.strip() if spec.strip_assistant else msg.content
    before, after = spec.tool_calls.after_results.around("instruction")
    trained, end = stop_split(spec, after, values)
    start = out.pos
    out.add("assistant_content", fill(before, values), msg.index)
    out.add("assistant_content", content, msg.index, content=(0, len(content)))
    out.add("assistant_suffix", trained, msg.index)
    out.turns.append((msg.index, start, out.pos))
    out.add("assistant_end", end, msg.index)


def stop_split(spec: Spec, pieces: Sequence, values: Mapping[str, Any]) -> tuple[str, str]:
    """The suffix up to the end of its first stop string (trained), and the rest (never
    generated, never trained); all of it is trained when it holds no stop string, or a
    variable (whose value could hold one)."""
    suffix = fill(pieces, values)
    if any(p.field is not None for p in pieces):
        return suffix, ""
    ends = [suffix.find(s) + len(s) for s in spec.stop if s in suffix]
    cut = min(ends) if ends else len(suffix)
    return suffix[:cut], suffix[cut:]


def _generation_prompt_is_prefix(head: str, body: list[_Part], prompt: str, *,
                                 rest: bool = False) -> tuple[str, list[_Part]]:
    """What the generation prompt supplies is prefix; with ``rest`` (``train_header_rest``),
    the header past a generation prompt it starts with is trained (the model writes it)."""
    if rest and len(head) > len(prompt) and head.startswith(prompt):
        return prompt, [_Part("assistant_content", head[len(prompt):])] + body
    if len(prompt) <= len(head) or not prompt.startswith(head):
        return head, body
    text = "".join(p.text for p in body)
    extra = prompt[len(head) :]
    if not text.startswith(extra):
        return head, body
    rest, cut = [], len(extra)
    for part in body:
        if cut and cut >= len(part.text):
            cut -= len(part.text)
            continue
        rest.append(_Part(part.kind, part.text[cut:], part.data, part.cut))
        cut = 0
    return prompt, rest
