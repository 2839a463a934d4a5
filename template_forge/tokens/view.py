"""Views of a tokenized conversation: every token, trained ones highlighted (terminal and HTML)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from template_forge.tokens.encoder import Encoded, Vocab


@dataclass(frozen=True)
class TokenView:
    index: int
    token_id: int
    text: str
    trained: bool


def token_views(encoded: Encoded, vocab: Vocab) -> list[TokenView]:
    """One entry per token; ``text`` is what the token stands for (partial UTF-8 as ``\\xNN``)."""
    out = []
    for k, (tid, m) in enumerate(zip(encoded.input_ids.tolist(), encoded.loss_mask.tolist())):
        text = vocab.token_bytes(tid).decode("utf-8", errors="backslashreplace")
        out.append(TokenView(k, tid, text, bool(m)))
    return out


def _visible(text: str) -> str:
    return text.replace("\t", "→\t").replace("\r", "␍").replace("\n", "↵\n")


def terminal(views: list[TokenView]) -> str:
    """Tokens with alternating shades so boundaries show; trained tokens on green."""
    import click

    parts = []
    for v in views:
        if v.trained:
            style = dict(bg="green" if v.index % 2 == 0 else "bright_green", fg="black")
        else:
            style = dict(bg="bright_black" if v.index % 2 == 0 else None, fg="white" if v.index % 2 == 0 else None)
        parts.append(click.style(_visible(v.text), **{k: x for k, x in style.items() if x is not None}))
    return "".join(parts)


def table(views: list[TokenView]) -> str:
    """One line per token: position, id, trained flag, and the token's text as a Python literal."""
    lines = [f"{'pos':>6} {'id':>7} train  text"]
    lines += [f"{v.index:>6} {v.token_id:>7} {'  1  ' if v.trained else '  .  '}  {v.text!r}" for v in views]
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
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p class="legend"><span class="t on">trained (loss_mask = 1)</span><span class="t a">not trained</span>
hover a token for its id and position.</p>
<pre>{body}</pre>
</body></html>
"""


def page(views: list[TokenView], *, title: str, summary: str) -> str:
    """A standalone HTML page of the same view."""
    spans = []
    for v in views:
        cls = "t" + (" on" if v.trained else "") + (" a" if v.index % 2 == 0 else "")
        text = html.escape(v.text).replace("\n", '<span class="nl">↵</span>\n')
        spans.append(f'<span class="{cls}" title="#{v.index} id {v.token_id}">{text}</span>')
    return _PAGE.format(title=html.escape(title), summary=html.escape(summary), body="".join(spans))
