"""Views of a tokenized conversation: every token, trained ones highlighted (terminal and HTML);
where the rendered text is at hand, tool definitions, tool calls, tool results and reasoning
in their own colours."""

from __future__ import annotations

import html
from dataclasses import dataclass

from template_forge.format.rendered import Rendered
from template_forge.tokens.encoder import Encoded, Vocab

#: segment kinds shown in their own colour: (label, terminal background pair, HTML class)
KINDS = {
    "tools": ("tool definitions", ("magenta", "bright_magenta"), "k-tools"),
    "tool": ("tool results", ("blue", "bright_blue"), "k-tool"),
    "assistant_reasoning": ("reasoning", ("cyan", "bright_cyan"), "k-reasoning"),
    "assistant_calls": ("tool calls", ("yellow", "bright_yellow"), "k-calls"),
}


@dataclass(frozen=True)
class TokenView:
    index: int
    token_id: int
    text: str
    trained: bool
    kind: str | None = None  # the segment kind of the token's first byte, where known


def token_views(encoded: Encoded, vocab: Vocab, rendered: Rendered | None = None) -> list[TokenView]:
    """One entry per token; ``text`` is what the token stands for (partial UTF-8 as ``\\xNN``).
    With ``rendered`` (the text the tokens encode), each token also gets its segment kind."""
    pieces = [vocab.token_bytes(tid) for tid in encoded.input_ids.tolist()]
    kinds = _kinds(rendered, pieces) if rendered is not None else [None] * len(pieces)
    return [TokenView(k, tid, raw.decode("utf-8", errors="backslashreplace"), bool(m), kind)
            for k, (tid, m, raw, kind) in enumerate(zip(encoded.input_ids.tolist(), encoded.loss_mask.tolist(),
                                                        pieces, kinds))]


def _kinds(rendered: Rendered, pieces: list[bytes]) -> list[str | None]:
    """The kind of the segment where each token starts, by byte offset; none at all when the
    tokens do not spell the text byte for byte (a tokenizer that normalises)."""
    if b"".join(pieces) != rendered.text.encode("utf-8"):
        return [None] * len(pieces)
    starts, kinds, pos = [], [], 0
    for seg in rendered.segments:
        starts.append(pos)
        kinds.append(seg.kind)
        pos += len(rendered.text[seg.start : seg.end].encode("utf-8"))
    out, k, offset = [], 0, 0
    for raw in pieces:
        while k + 1 < len(starts) and starts[k + 1] <= offset:
            k += 1
        out.append(kinds[k] if kinds else None)
        offset += len(raw)
    return out


def _visible(text: str) -> str:
    return text.replace("\t", "→\t").replace("\r", "␍").replace("\n", "↵\n")


def terminal(views: list[TokenView]) -> str:
    """Tokens with alternating shades so boundaries show; trained tokens on green; tool
    definitions on magenta, results on blue, reasoning on cyan and calls on yellow (underlined
    where trained)."""
    import click

    parts = []
    for v in views:
        if v.kind in KINDS:
            style = dict(bg=KINDS[v.kind][1][v.index % 2], fg="black", underline=v.trained)
        elif v.trained:
            style = dict(bg="green" if v.index % 2 == 0 else "bright_green", fg="black")
        else:
            style = dict(bg="bright_black" if v.index % 2 == 0 else None, fg="white" if v.index % 2 == 0 else None)
        parts.append(click.style(_visible(v.text), **{k: x for k, x in style.items() if x is not None}))
    return "".join(parts)


def table(views: list[TokenView]) -> str:
    """One line per token: position, id, trained flag, and the token's text as a Python literal."""
    kinds = any(v.kind for v in views)
    lines = [f"{'pos':>6} {'id':>7} train  " + ("kind                 " if kinds else "") + "text"]
    lines += [f"{v.index:>6} {v.token_id:>7} {'  1  ' if v.trained else '  .  '}  "
              + (f"{v.kind or '':<20} " if kinds else "") + repr(v.text) for v in views]
    return "\n".join(lines)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; margin: 2rem; color: #222; }}
.legend span {{ padding: 0 .4em; margin-right: 1em; }}
pre {{ white-space: pre-wrap; word-break: break-all; font: 13px/1.7 ui-monospace, monospace; }}
.t {{ border-right: 1px solid #ccc; }}
.t.a {{ background: #f1f1f1; }}
.t.on {{ background: #b7ebc0; }}
.t.on.a {{ background: #8fdc9c; }}
.nl {{ color: #999; }}
.t.k-tools {{ background: #f3d9f5; }} .t.k-tool {{ background: #d6e4fb; }}
.t.k-reasoning {{ background: #d3f3f3; }} .t.k-calls {{ background: #fbefc4; }}
.t.on.k-reasoning, .t.on.k-calls {{ text-decoration: underline; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p class="legend"><span class="t on">trained (loss_mask = 1)</span><span class="t a">not trained</span>{legend}
hover a token for its id and position.</p>
<pre>{body}</pre>
</body></html>
"""


def page(views: list[TokenView], *, title: str, summary: str) -> str:
    """A standalone HTML page of the same view."""
    spans = []
    for v in views:
        cls = "t" + (" on" if v.trained else "") + (" a" if v.index % 2 == 0 else "") + \
            (" " + KINDS[v.kind][2] if v.kind in KINDS else "")
        text = html.escape(v.text).replace("\n", '<span class="nl">↵</span>\n')
        spans.append(f'<span class="{cls}" title="#{v.index} id {v.token_id}">{text}</span>')
    shown = dict.fromkeys(v.kind for v in views if v.kind in KINDS)
    legend = "".join(f'<span class="t {KINDS[k][2]}">{KINDS[k][0]}</span>' for k in shown)
    return _PAGE.format(title=html.escape(title), summary=html.escape(summary), body="".join(spans), legend=legend)
