"""A rendered conversation: its text and the segments that tile it (what each span is, and
from which message), built by the renderer's :class:`_Builder`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Container, NamedTuple

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
        >>> from template_forge.format.render import render
        >>> r = render(load_builtin("chatml"), [{"role": "user", "content": "Hi"},
        ...                                      {"role": "assistant", "content": "Yo"}])
        >>> [r.text[s:e] for s, e in r.trained_spans()]
        ['Yo<|im_end|>']
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
    #: Positions where tokenization restarts (``tokenize_apart``): no token spans one.
    breaks: tuple[int, ...] = ()

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

    def __init__(self, apart: bool = False) -> None:
        self.apart = apart  # record a break around every piece of message text (but inside calls)
        self.breaks: list[int] = []
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
            if self.apart and kind != "assistant_calls":  # a call is one piece: see cut()
                self.breaks += (pos + content[0], pos + content[1])
        segments = self.segments
        last = segments[-1] if segments else None
        if last is not None and last[0] == kind and last[3] == index and last[2] == pos:
            segments[-1] = _new_segment(Segment, (kind, last[1], end, index))
        else:
            segments.append(_new_segment(Segment, (kind, pos, end, index)))
        self.parts.append(text)
        self.pos = end

    def cut(self) -> None:
        """A break here (``tokenize_apart``): between a turn's content and its calls, or two calls."""
        if self.apart:
            self.breaks.append(self.pos)

    def build(self) -> Rendered:
        end = self.pos
        breaks = tuple(sorted({b for b in self.breaks if 0 < b < end}))
        return Rendered("".join(self.parts), tuple(self.segments), tuple(self.content), tuple(self.turns), breaks)
