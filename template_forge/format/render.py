"""Reference renderer: the one definition of what a spec means.

``render(spec, messages)`` returns the text and the character span of every segment.
The segments tile the text (contiguous, in order, no gaps). For the llmforge Llama 3
format and ``[system, user, assistant]``::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nBe brief.<|eot_id|>…
    └─── bos ───────┘└──────────────── system (message 0) ─────────────────────┘
    …<|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>…
     └──────────────── user (message 1) ───────────────────┘
    …<|start_header_id|>assistant<|end_header_id|>\\n\\nHello<|eot_id|>
     └──────── assistant_prefix (2) ─────────────┘└content┘└suffix─┘
                                                   └── trained ───┘

``assistant_content`` + ``assistant_suffix`` are what the model learns to say (the
suffix carries the end-of-turn token, so the model learns to stop). The compiled
training template wraps exactly these spans in ``{% generation %}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Container, Iterable, Mapping, NamedTuple, Sequence

from template_forge.errors import RenderError
from template_forge.format.spec import OWN_SEGMENT_PLACEMENTS, Piece, Spec

ROLES = ("system", "user", "assistant")

#: Segment kinds, in the order they can appear inside one message.
SEGMENT_KINDS = (
    "bos", "system", "user", "assistant_prefix", "assistant_content", "assistant_suffix",
    "generation_prompt", "final_suffix",
)


_new_segment = tuple.__new__


class Segment(NamedTuple):
    """A span ``text[start:end]`` of one kind, from message ``message_index`` (None: from the spec)."""

    kind: str
    start: int
    end: int
    message_index: int | None = None


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: the text and its segments.

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> r = render(load_builtin("chatml"), [{"role": "user", "content": "Hi"},
        ...                                      {"role": "assistant", "content": "Yo"}])
        >>> [r.text[s:e] for s, e in r.trained_spans()]
        ['Yo<|im_end|>\\n']
    """

    text: str
    segments: tuple[Segment, ...]
    #: Character spans of message text (contents, system text) as opposed to template text.
    #: Special-token strings are control tokens only outside these spans.
    content_spans: tuple[tuple[int, int], ...] = ()
    #: ``(message_index, start, end)`` of each assistant turn's trained text (content +
    #: suffix), empty ones included: transformers still marks a token that straddles an
    #: empty ``{% generation %}`` span.
    assistant_turns: tuple[tuple[int, int, int], ...] = ()

    def trained_spans(self, only: Container[int] | None = None, *, keep_empty: bool = False) -> list[tuple[int, int]]:
        """Character spans of trained text (assistant content + suffix), adjacent ones merged.

        Args:
            only: the assistant message indices to include (default: all).
            keep_empty: keep an empty turn as a zero-width span, as transformers records an
                empty ``{% generation %}`` block (it marks a token that straddles it).
        """
        spans: list[tuple[int, int]] = []
        for index, start, end in self.assistant_turns:
            if (only is not None and index not in only) or (start == end and not keep_empty):
                continue
            if spans and spans[-1][1] == start and spans[-1][0] < start < end:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans


class _Builder:
    """Accumulates text and segments; merges neighbours of the same kind and message."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.segments: list[Segment] = []
        self.content: list[tuple[int, int]] = []
        self.turns: list[tuple[int, int, int]] = []

    def add(self, kind: str, text: str, index: int | None = None, *, content: tuple[int, int] | None = None) -> None:
        """Append ``text``; ``content`` is the (start, end) of message text inside it, if any."""
        if not text:
            return
        pos = self.pos
        end = pos + len(text)
        if content is not None and content[1] > content[0]:
            self.content.append((pos + content[0], pos + content[1]))
        segments = self.segments
        last = segments[-1] if segments else None
        if last is not None and last[0] == kind and last[3] == index and last[2] == pos:
            segments[-1] = _new_segment(Segment, (kind, last[1], end, index))
        else:
            segments.append(_new_segment(Segment, (kind, pos, end, index)))
        self.parts.append(text)
        self.pos = end

    def build(self) -> Rendered:
        return Rendered("".join(self.parts), tuple(self.segments), tuple(self.content), tuple(self.turns))


# --------------------------------------------------------------------------- validation
def _check_messages(messages: Any) -> list[tuple[int, str, str]]:
    if type(messages) is not list and (not isinstance(messages, Sequence) or isinstance(messages, (str, bytes))):
        raise RenderError(f"a conversation must be a list of messages, found {type(messages).__name__}.")
    out = []
    for i, msg in enumerate(messages):
        if type(msg) is dict:
            role, content = msg.get("role"), msg.get("content")
            if role in ROLES and type(content) is str:
                out.append((i, role, content))
                continue
        if not isinstance(msg, Mapping):
            raise RenderError(f"expected a mapping with `role` and `content`, found {type(msg).__name__}.", message_index=i)
        role = msg.get("role")
        if role not in ROLES:
            raise RenderError(
                f"unknown role {role!r}; expected one of {', '.join(ROLES)}. Rename the role "
                "(e.g. `human` → `user`, `gpt` → `assistant`) or drop the message.", message_index=i)
        content = msg.get("content")
        if not isinstance(content, str):
            raise RenderError(
                f"`content` of this {role} message must be a string, found {type(content).__name__}. "
                "Flatten multi-part content to text.", message_index=i)
        out.append((i, role, content))
    return out


def _find_system(msgs: list[tuple[int, str, str]]) -> tuple[int | None, str | None]:
    found = [(i, c) for i, r, c in msgs if r == "system"]
    if len(found) > 1:
        raise RenderError(
            f"messages {found[0][0]} and {found[1][0]} are both system messages; at most one is "
            "supported. Merge them into one.", message_index=found[1][0])
    return found[0] if found else (None, None)


def alternation_break(roles: Iterable[str]) -> tuple[int, str] | None:
    """The first message that breaks user/assistant/user/… (system messages aside), and the
    role expected there; None when the roles alternate.

    Examples:
        >>> alternation_break(["system", "user", "user"])
        (2, 'assistant')
    """
    turn = 0
    for i, role in enumerate(roles):
        if role == "system":
            continue
        expected = "user" if turn % 2 == 0 else "assistant"
        if role != expected:
            return i, expected
        turn += 1
    return None


def _check_alternation(msgs: list[tuple[int, str, str]]) -> None:
    found = alternation_break(role for _, role, _ in msgs)
    if found:
        i, expected = found
        raise RenderError(
            f"roles must alternate user/assistant/user/… after the optional system message; "
            f"expected {expected}, found {msgs[i][1]}. Merge consecutive messages of the same role.",
            message_index=i)


# --------------------------------------------------------------------------- system decisions
def system_decision(spec: Spec, sys_index: int | None, sys_raw: str | None) -> tuple[bool, str]:
    """Whether the system template is rendered, and with which (stripped) text."""
    if sys_index is not None:
        raw, present = sys_raw or "", True
    else:
        raw = spec.default_system_message
        present = bool(raw) or spec.add_system_tags
    text = raw.strip() if spec.strip_system else raw
    if not present or spec.placement in ("drop", "reject"):
        return False, text
    if spec.add_system_tags or spec.empty_system == "render":
        return True, text
    if spec.empty_system == "drop":
        return text != "", text
    # auto: llmforge drops an empty *own* system message (tested before stripping), but
    # renders the system template into the user turn for any system message it has.
    return (raw != "" if spec.placement in OWN_SEGMENT_PLACEMENTS else True), text


def system_target(spec: Spec, msgs: list[tuple[int, str, str]]) -> int | None:
    """Index of the user message that receives ``{system}``, if any."""
    users = [i for i, r, _ in msgs if r == "user"]
    if spec.placement == "first_user" and users:
        return users[0]
    if spec.placement == "last_user" and users:
        return users[-1]
    if spec.placement == "final_user" and msgs and msgs[-1][1] == "user":
        return msgs[-1][0]
    return None


# --------------------------------------------------------------------------- rendering
def _fill(pieces: Iterable[Piece], values: Mapping[str, str]) -> str:
    return "".join(p.text if p.field is None else values[p.field] for p in pieces)


def _add_user(out: _Builder, spec: Spec, index: int, content: str, system_text: str | None,
              sys_index: int | None, values: Mapping[str, str], around: tuple[str, str]) -> None:
    """Add a user turn; ``around`` is the user template before/after ``{instruction}``,
    filled, with no system text."""
    tmpl = spec.user
    sys_part, sys_span = _system_block(spec, system_text, values) if system_text is not None else ("", (0, 0))
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
    if not sys_part:  # the common case: one segment, the content inside it
        before, after = around
        out.add("user", before + content + after, index, content=(len(before), len(before) + len(content)))
        return
    for piece in tmpl.pieces:
        if piece.field == "system":
            out.add("system", sys_part, sys_index, content=sys_span)
        elif piece.field == "instruction":
            out.add("user", content, index, content=(0, len(content)))
        else:
            out.add("user", piece.text if piece.field is None else values[piece.field], index)


def _system_block(spec: Spec, text: str, values: Mapping[str, str]) -> tuple[str, tuple[int, int]]:
    """The filled system template and the span of the system text inside it."""
    before, after = spec.system.around("instruction")
    head = _fill(before, values)
    return head + text + _fill(after, values), (len(head), len(head) + len(text))


def _add_system(out: _Builder, spec: Spec, text: str, index: int | None, values: Mapping[str, str]) -> None:
    block, span = _system_block(spec, text, values)
    out.add("system", block, index, content=span)


def _add_assistant(out: _Builder, spec: Spec, index: int, content: str, around: tuple[str, str]) -> None:
    out.add("assistant_prefix", around[0], index)
    start = out.pos
    content = content.strip() if spec.strip_assistant else content
    out.add("assistant_content", content, index, content=(0, len(content)))
    out.add("assistant_suffix", around[1], index)
    out.turns.append((index, start, out.pos))


def _values(spec: Spec, variables: Mapping[str, str] | None) -> dict[str, str]:
    values = spec.variable_defaults()
    for key, value in (variables or {}).items():
        if key not in values:
            known = ", ".join(values) or "none"
            raise RenderError(f"unknown template variable `{key}`; this format declares: {known}.")
        if not isinstance(value, str):
            raise RenderError(f"template variable `{key}` must be a string, found {type(value).__name__}.")
        values[key] = value
    return values


def render(spec: Spec, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
           variables: Mapping[str, str] | None = None) -> Rendered:
    """Render a conversation (OpenAI-style ``messages``) with a spec.

    Args:
        spec: the prompt format.
        messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``; other keys
            are ignored. At most one system message, wherever it is (any number with
            ``system_placement: in_place``).
        add_generation_prompt: append ``trailing_assistant`` (inference); otherwise append
            ``final_suffix``.
        variables: values for the spec's template variables (defaults from the spec).

    Raises:
        RenderError: for a conversation the format cannot render, naming the message index.

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> render(load_builtin("llmforge-mistral"), [{"role": "system", "content": "hello1"},
        ...        {"role": "user", "content": "hello2"}]).text
        '[INST] hello1 + hello2 [/INST]'
    """
    msgs = _check_messages(messages)
    values = _values(spec, variables)
    sys_index, sys_raw = _system_message(spec, msgs)
    if spec.require_alternation:
        _check_alternation(msgs)
    emit, sys_text = system_decision(spec, sys_index, sys_raw)
    if spec.placement == "in_place" and msgs and msgs[0][1] == "system":
        emit = False  # the default stands in only when the conversation does not open with a system message
    out = _Builder()
    out.add("bos", spec.bos)
    if emit and spec.placement in OWN_SEGMENT_PLACEMENTS:
        _add_system(out, spec, sys_text, sys_index, values)
    target = system_target(spec, msgs) if emit else None
    _add_turns(out, spec, msgs, values, sys_text=sys_text if target is not None else None, sys_index=sys_index,
               target=target)
    if add_generation_prompt:
        out.add("generation_prompt", spec.trailing_assistant)
    else:
        out.add("final_suffix", spec.final_suffix)
    return out.build()


def _system_message(spec: Spec, msgs: list[tuple[int, str, str]]) -> tuple[int | None, str | None]:
    """The conversation's system message (index, text), refused where the format has none;
    ``(None, None)`` with ``in_place``, which renders every system message where it is."""
    if spec.placement == "in_place":
        return None, None
    sys_index, sys_raw = _find_system(msgs)
    if sys_index is not None and spec.placement == "reject":
        raise RenderError(
            "this format does not support a system message. Drop it, or use a format whose "
            "`system_placement` is not `reject`.", message_index=sys_index)
    return sys_index, sys_raw


def _add_turns(out: _Builder, spec: Spec, msgs: list[tuple[int, str, str]], values: Mapping[str, str], *,
               sys_text: str | None, sys_index: int | None, target: int | None) -> None:
    """Every message in order; user message ``target`` receives the system text."""
    before, after = spec.assistant.around("instruction")
    assistant_around = (_fill(before, values), _fill(after, values))
    before, after = spec.user.around("instruction")
    no_system = {**values, "system": ""}
    user_around = (_fill(before, no_system), _fill(after, no_system))
    for i, role, content in msgs:
        if role == "user":
            _add_user(out, spec, i, content, sys_text if i == target else None, sys_index, values, user_around)
        elif role == "assistant":
            _add_assistant(out, spec, i, content, assistant_around)
        elif spec.placement == "in_place":
            emit_here, text = system_decision(spec, i, content)
            if emit_here:
                _add_system(out, spec, text, i, values)


def promises_prefix(spec: Spec, *, generation_prompt: bool = False) -> bool:
    """Whether rendering a prefix of a conversation gives a prefix of the whole text.

    For a conversation whose system message (if any) comes first, the text of
    ``messages[:k]`` is a prefix of the text of ``messages`` when nothing is appended at
    the end (no ``final_suffix``) and the system text does not move to a later user turn
    (``last_user``/``final_user`` placements). With ``generation_prompt=True`` the
    promise is stronger: ``messages[:k]`` rendered with the generation prompt is a prefix
    of ``messages[:k+1]`` when message ``k`` is an assistant turn; that holds when the
    generation prompt is exactly the assistant header. Inference servers that cache the
    KV of earlier turns rely on this.

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> promises_prefix(load_builtin("llama3"), generation_prompt=True)
        True
        >>> promises_prefix(load_builtin("mistral-v3"))
        False
    """
    if spec.final_suffix or spec.placement in ("last_user", "final_user"):
        return False
    if not generation_prompt:
        return True
    before, _ = spec.assistant.around("instruction")
    return spec.trailing_assistant == _fill(before, spec.variable_defaults())
