"""Check a spec against an existing chat template (a model's tokenizer, a ``.jinja`` file).

Before training on a format, make sure it is the format the model is served with:
``tforge check llama3 path/to/tokenizer`` renders sample conversations with the spec and
with the tokenizer's own ``chat_template`` (through transformers' renderer, imported only
here and only when called) and reports the first difference, with its position.

The samples cover the domain chat templates share: an optional system message first
(absent, empty, padded or plain), then 1–6 alternating user/assistant turns ending with
either role, with padded, empty, unicode, brace and Jinja-looking content; every sample is
checked with and without the generation prompt.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from template_forge.errors import DataError, RenderError, TemplateForgeError
from template_forge.format.render import render
from template_forge.format.spec import Spec
from template_forge.io import read_json_object

SAMPLE_TEXTS = (
    "Hello!", "What is 2+2?", "2+2 is 4.", "  padded both sides  ", "\nleading newline", "trailing newline\n",
    "", " ", "line one\nline two", "tab\there", "unicode: 日本語, émoji 🤖", "braces {x} {{ y }}",
    "{% if true %}jinja-looking{% endif %}", "quotes ' \" and \\ backslash", "</s> and <|eot_id|> as text",
)


def sample_conversations(n: int, *, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` deterministic sample conversations (same ``seed``, same samples).

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
            msgs.insert(0, {"role": "system", "content": ["", "  Be brief.  ", "You are a helpful assistant."][system_kind - 1]})
        out.append(msgs)
    return out


@dataclass(frozen=True)
class Mismatch:
    """One sample where the spec and the template disagree."""

    sample: int
    messages: list[dict[str, str]]
    add_generation_prompt: bool
    expected: str | None  # the spec's text; None when the spec refuses the conversation
    got: str | None  # the template's text; None when the template raises

    def describe(self, context: int = 40) -> str:
        head = f"sample {self.sample} ({'with' if self.add_generation_prompt else 'without'} generation prompt): "
        if self.expected is None or self.got is None:
            refused = "the spec refuses it" if self.expected is None else "the template raises"
            return head + f"{refused}, the other renders it.\n  messages: {json.dumps(self.messages, ensure_ascii=False)}"
        pos = next((i for i, (a, b) in enumerate(zip(self.expected, self.got)) if a != b),
                   min(len(self.expected), len(self.got)))
        lo = max(pos - context, 0)
        return (head + f"first difference at character {pos}.\n"
                f"  spec:     {self.expected[lo:pos + context]!r}\n"
                f"  template: {self.got[lo:pos + context]!r}\n"
                f"  messages: {json.dumps(self.messages, ensure_ascii=False)}")


@dataclass
class CheckReport:
    renders: int = 0
    identical: int = 0
    both_refuse: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_template(source: str | Path, *, name: str = "default") -> tuple[str, dict[str, str]]:
    """The chat template of a ``.jinja`` file or a tokenizer folder, and its special tokens.

    A folder is read as transformers reads it: ``chat_template.jinja`` first, then the
    ``chat_template`` key of ``tokenizer_config.json`` (a string, or a list of named ones).
    """
    path = Path(source)
    if path.is_file():
        return path.read_text(encoding="utf-8"), {}
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder. Give a .jinja file or a tokenizer folder.")
    config_path = path / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.is_file() else {}
    tokens = {k: t for k in ("bos_token", "eos_token") if (t := _token_text(config.get(k))) is not None}
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8"), tokens
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if name not in named:
            raise DataError(f"{config_path}: no chat template named {name!r}; it has {', '.join(map(str, named))}.")
        template = named[name]
    if not isinstance(template, str):
        raise DataError(f"{path}: no chat template (neither chat_template.jinja nor a `chat_template` key in "
                        "tokenizer_config.json).")
    return template, tokens


def _hf_renderer():
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        raise TemplateForgeError(
            "checking against a chat template needs transformers' renderer: pip install transformers") from None
    import jinja2

    return render_jinja_template, jinja2.TemplateError


def check_template(spec: Spec, template: str, *, samples: int = 200, seed: int = 0,
                   tokens: dict[str, str] | None = None, variables: dict[str, str] | None = None) -> CheckReport:
    """Render ``samples`` conversations with the spec and with ``template``; compare.

    Args:
        spec: the prompt format.
        template: a Jinja chat template, rendered as transformers renders it.
        samples: how many conversations (each rendered with and without the generation prompt).
        seed: picks the samples.
        tokens: ``bos_token`` / ``eos_token`` for the template.
        variables: template variables, passed to both sides.
    """
    render_jinja_template, template_error = _hf_renderer()
    report = CheckReport()
    for i, messages in enumerate(sample_conversations(samples, seed=seed)):
        for gen in (False, True):
            try:
                expected = render(spec, messages, add_generation_prompt=gen, variables=variables).text
            except RenderError:
                expected = None
            try:
                (got,), _ = render_jinja_template(conversations=[messages], chat_template=template,
                                                  add_generation_prompt=gen, **(tokens or {}), **(variables or {}))
            except template_error:
                got = None
            report.renders += 1
            if expected == got:
                report.identical += expected is not None
                report.both_refuse += expected is None
            else:
                report.mismatches.append(Mismatch(i, messages, gen, expected, got))
    return report
