"""The turns of a rendered conversation: system blocks, user turns, assistant turns (with
their reasoning and tool calls) and tool results, each appended to a
:class:`~template_forge.format.rendered._Builder` as typed segments.

:func:`template_forge.format.render.render` decides which turn goes where; this module
decides what each turn's text is. Message text (contents, reasoning, tool-call names and
arguments, tool definitions) is recorded as content spans: special-token strings inside it
stay text.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def add_system(out: _Builder, spec: Spec, text: str, index: int | None, values: Mapping[str, Any]) -> None:
    block, span = system_block(spec, text, values)
    out.add("system", block, index, content=span)


def add_tools_system(out: _Builder, spec: Spec, text: str | None, index: int | None, values: Mapping[str, Any],
                     definitions: str) -> None:
    """``tools.system`` in place of the system template: the system text (``None``: there is
    none) wrapped by ``tools.system_text``, and the tool definitions where ``{tools}`` is."""
    tools = spec.tools
    inner = system_block(spec, text, values, tools.system_text) if text is not None else ("", (0, 0))
    for piece in tools.system.pieces:
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
    elif spec.strip_user:
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
def add_tool_results(out: _Builder, spec: Spec, group: Sequence[Message], values: Mapping[str, Any]) -> None:
    """Consecutive tool results, each written by ``tool_results.each``, inside one ``group``."""
    results = spec.tool_results
    before, after = results.group.around("instruction")
    out.add("tool", fill(before, values), group[0].index)
    for msg in group:
        content = Json().dumps(msg.content) if results.content == "json" else msg.content
        fields = {"name": msg.name or "", "id": msg.tool_call_id or ""}
        for piece in results.each.pieces:
            if piece.field == "instruction":
                out.add("tool", content, msg.index, content=(0, len(content)))
            else:
                text = piece.text if piece.field is None else fields.get(piece.field, values.get(piece.field, ""))
                out.add("tool", text, msg.index, content=(0, len(text)) if piece.field in fields else None)
    out.add("tool", fill(after, values), group[-1].index)


# --------------------------------------------------------------------------- assistant turns
@dataclass
class _Part:
    kind: str
    text: str
    data: bool = False  # message text (a content span), not template text


def split_reasoning(spec: Spec, msg: Message) -> tuple[str | None, str]:
    """The reasoning and the answer: ``reasoning_content``, else (with ``from_content``) the
    text before the closing tag, cut out of the content the way Qwen3's template cuts it."""
    r = spec.reasoning
    if msg.reasoning is not None or r is None or r.from_content is None or r.from_content[1] not in msg.content:
        return msg.reasoning, msg.content
    open_tag, close_tag = r.from_content
    head, _, _ = msg.content.partition(close_tag)
    return head.rstrip("\n").split(open_tag)[-1].lstrip("\n"), msg.content.split(close_tag)[-1].lstrip("\n")


def reasoning_shown(spec: Spec, msg: Message, reasoning: str | None, *, last: bool, last_user: int | None) -> bool:
    r = spec.reasoning
    if r is None or r.keep == "never":
        return False
    if r.keep == "after_last_user" and (last_user is None or msg.index <= last_user):
        return False
    return bool(reasoning) or r.empty == "always" or (r.empty == "final" and last)


def _body(spec: Spec, msg: Message, values: Mapping[str, Any], *, last: bool, last_user: int | None,
          slots: bool) -> tuple[list[_Part], list[_Part]]:
    """The parts of ``{instruction}`` (reasoning block and content) and of ``{calls}``; with
    ``slots`` False (no ``tool_calls.assistant``) the calls follow the content in ``{instruction}``."""
    reasoning, content = split_reasoning(spec, msg)
    if spec.strip_assistant:
        content = content.strip()
    parts: list[_Part] = []
    said = content
    if reasoning_shown(spec, msg, reasoning, last=last, last_user=last_user):
        r = spec.reasoning
        text = (reasoning or "").strip(r.strip) if r.strip else (reasoning or "")
        for piece in r.block.pieces:
            if piece.field == "instruction":
                parts.append(_Part("assistant_reasoning", text, True))
            else:
                parts.append(_Part("assistant_reasoning", piece.text if piece.field is None else values[piece.field]))
        said = content.lstrip(r.content_lstrip) if r.content_lstrip else content
    calls = _calls(spec, msg, values, content) if msg.tool_calls else []
    tc = spec.tool_calls
    if msg.tool_calls and slots and said:
        before, after = tc.content.around("instruction")
        parts += [_Part("assistant_content", fill(before, values)), _Part("assistant_content", said, True),
                  _Part("assistant_content", fill(after, values))]
    elif not (msg.tool_calls and slots):
        parts.append(_Part("assistant_content", said, True))
    return (parts, calls) if slots else (parts + calls, [])


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
        args = call.arguments if tc.arguments == "as_given" and isinstance(call.arguments, str) else \
            tc.writer.dumps(call.arguments)
        name = Json().dumps(call.name) if tc.names == "json" else call.name
        fields = {"name": name, "arguments": args, "id": call.id or ""}
        for piece in tc.each.pieces:
            if piece.field in fields:
                parts.append(_Part("assistant_calls", fields[piece.field], True))
            else:
                parts.append(_Part("assistant_calls", piece.text if piece.field is None else values[piece.field]))
    return parts + [_Part("assistant_calls", tc.close)]


def add_assistant(out: _Builder, spec: Spec, msg: Message, values: Mapping[str, Any], *, last: bool,
                  last_user: int | None, generation_prompt: str) -> None:
    """An assistant turn: prefix, then the trained body (reasoning, content, calls) and the
    suffix up to the stop string, then the untrained rest of the suffix. What the generation
    prompt supplies at inference (an empty think block after the header) is prefix."""
    tc = spec.tool_calls
    slots = bool(msg.tool_calls and tc is not None and tc.assistant is not None)
    template = tc.assistant if slots else (spec.final_assistant if last and spec.final_assistant else spec.assistant)
    instruction, calls = _body(spec, msg, values, last=last, last_user=last_user, slots=slots)
    fields = [k for k, p in enumerate(template.pieces) if p.field in ("instruction", "calls")]
    head = fill(template.pieces[: fields[0]], values)
    body: list[_Part] = []
    for piece in template.pieces[fields[0] : fields[-1] + 1]:
        if piece.field == "instruction":
            body += instruction
        elif piece.field == "calls":
            body += calls
        else:
            body.append(_Part("assistant_content", piece.text if piece.field is None else values[piece.field]))
    head, body = _generation_prompt_is_prefix(head, body, generation_prompt)
    trained, end = stop_split(spec, template.pieces[fields[-1] + 1 :], values)
    out.add("assistant_prefix", head, msg.index)
    start = out.pos
    for part in body:
        out.add(part.kind, part.text, msg.index, content=(0, len(part.text)) if part.data else None)
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


def _generation_prompt_is_prefix(head: str, body: list[_Part], prompt: str) -> tuple[str, list[_Part]]:
    if len(prompt) <= len(head) or not prompt.startswith(head):
        return head, body
    text = "".join(p.text for p in body)
    extra = prompt[len(head) :]
    if not text.startswith(extra):
        return head, body
    rest, cut = [], len(extra)
    for part in body:
        if cut >= len(part.text):
            cut -= len(part.text)
            continue
        rest.append(_Part(part.kind, part.text[cut:], part.data))
        cut = 0
    return prompt, rest
