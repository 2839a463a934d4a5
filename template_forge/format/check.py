"""Check a spec against an existing chat template (a model's tokenizer, a ``.jinja`` file).

Before training on a format, make sure it is the format the model is served with:
``tforge check llama3 path/to/tokenizer`` renders sample conversations
(:mod:`~template_forge.format.samples`) with the spec and with the tokenizer's own
``chat_template`` (through transformers' renderer, imported only here and only when
called) and reports the first differences, with their position.

Every sample is checked with and without the generation prompt. Agentic samples (tool
definitions, tool calls and results, reasoning) join the plain ones when the spec or the
template can render them. Both sides read the same frozen clock, so templates that print
the date (``strftime_now``) compare.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from template_forge.errors import DataError, RenderError
from template_forge.format.render import render
from template_forge.format.samples import KINDS, Sample, describe_sample, draw_samples, sample_conversations  # noqa: F401
from template_forge.format.sandbox import Job, Limits, TemplateSandbox, frozen_clock  # noqa: F401 (frozen_clock: re-exported)
from template_forge.format.spec import Spec
from template_forge.io import read_json_object

#: What a template reads that makes each agentic sample kind worth drawing.
_READS_FOR_KIND = {
    "tools": {"tools"},
    "tool_calls": {"tool_calls", "tool_call_id"},
    "reasoning": {"reasoning_content", "thinking", "reasoning"},
}


@dataclass(frozen=True)
class Mismatch:
    """One sample where the spec and the template disagree."""

    sample: int
    messages: list[dict[str, Any]]
    add_generation_prompt: bool
    expected: str | None  # the spec's text; None when the spec refuses the conversation
    got: str | None  # the template's text; None when the template raises
    kind: str = "plain"
    tools: list[dict[str, Any]] | None = None
    spec_error: str | None = None  # why the spec refuses
    template_error: str | None = None  # what the template raised, as "TypeError: ..."

    def describe(self, context: int = 40) -> str:
        head = describe_sample(self.sample, self.kind, self.add_generation_prompt) + ": "
        if self.expected is None:
            head += f"the spec refuses it ({self.spec_error}), the template renders it."
        elif self.got is None:
            head += f"the template raises {self.template_error}; the spec renders it."
        else:
            pos = next((i for i, (a, b) in enumerate(zip(self.expected, self.got)) if a != b),
                       min(len(self.expected), len(self.got)))
            lo = max(pos - context, 0)
            head += (f"first difference at character {pos}.\n"
                     f"  spec:     {self.expected[lo:pos + context]!r}\n"
                     f"  template: {self.got[lo:pos + context]!r}")
        return head + f"\n  messages: {json.dumps(self.messages, ensure_ascii=False)}" + self._tools_line()

    def _tools_line(self) -> str:
        if not self.tools:
            return ""
        return "\n  tools: " + ", ".join(str(t.get("function", t).get("name")) for t in self.tools)


@dataclass
class CheckReport:
    renders: int = 0
    identical: int = 0
    both_refuse: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    #: renders per sample kind (a key of samples.KINDS)
    kinds: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        """``80 renders: 48 plain, 32 with tools; 78 identical, 2 refused by both, 0 different``;
        the differences too are counted by kind."""
        different = f"{len(self.mismatches)} different"
        if self.mismatches:
            different += f" ({_by_kind(Counter(m.kind for m in self.mismatches))})"
        return (f"{self.renders} renders: {_by_kind(self.kinds) or 'none'}; {self.identical} identical, "
                f"{self.both_refuse} refused by both, {different}")

    def examples(self, n: int) -> list[Mismatch]:
        """``n`` differences to show: the first of each kind, then the next ones, in sample order."""
        firsts = {}
        for m in self.mismatches:
            firsts.setdefault(m.kind, m)
        chosen = list(firsts.values())[:n]
        chosen += [m for m in self.mismatches if m not in chosen][: n - len(chosen)]
        order = {id(m): k for k, m in enumerate(self.mismatches)}
        return sorted(chosen, key=lambda m: order[id(m)])


def _by_kind(counts: Counter) -> str:
    return ", ".join(f"{counts[k]} {label}" for k, label in KINDS.items() if counts[k])


@dataclass(frozen=True)
class TemplateInfo:
    """What a chat template reads: the variables it takes from the context (``bos_token``,
    ``tools``, ``enable_thinking``…) and the message keys and strings it names."""

    reads: frozenset[str]

    def missing_tokens(self, tokens: Mapping[str, str]) -> list[str]:
        """``bos_token`` / ``eos_token`` the template reads but that are not given."""
        return [k for k in ("bos_token", "eos_token") if k in self.reads and k not in tokens]


# --------------------------------------------------------------------------- loading
def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the chat template ({exc}).") from None


def load_template(source: str | Path, *, name: str = "default") -> tuple[str, dict[str, str]]:
    """The chat template of a ``.jinja`` file or a tokenizer folder, and its special tokens.

    A folder is read as transformers reads it: ``chat_template.jinja`` first, then the
    ``chat_template`` key of ``tokenizer_config.json`` (a string, or a list of named ones).
    """
    path = Path(source)
    if path.is_file():
        return _read_text(path), {}
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder. Give a .jinja file or a tokenizer folder.")
    config_path = path / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.is_file() else {}
    tokens = {k: t for k in ("bos_token", "eos_token") if (t := _token_text(config.get(k))) is not None}
    if (path / "chat_template.jinja").is_file():
        return _read_text(path / "chat_template.jinja"), tokens
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


def inspect_template(template: str, *, where: str = "<template>") -> TemplateInfo:
    """Compile ``template`` as transformers does and list what it reads (in a sandbox
    worker: compiling folds constants, which runs template code).

    Raises:
        DataError: for a syntax error, with its line and the offending source line; for a
            compile that raises, runs too long or kills the worker.

    Examples:
        >>> inspect_template("{{ bos_token }}{% for m in messages %}{{ m.tool_calls }}{% endfor %}").reads >= {
        ...     "bos_token", "messages", "tool_calls"}
        True
        >>> inspect_template("{% if %}", where="t.jinja")
        Traceback (most recent call last):
        ...
        template_forge.errors.DataError: t.jinja:1: the chat template is not valid Jinja (Expected an expression, got 'end of statement block'):
          {% if %}
    """
    with TemplateSandbox(template, where=where) as box:
        return TemplateInfo(box.compiled.reads)


def sample_kinds(spec: Spec, info: TemplateInfo) -> tuple[str, ...]:
    """The agentic sample kinds worth drawing: those the spec declares or the template reads."""
    declared = {"tools": spec.tools is not None,
                "tool_calls": spec.tool_calls is not None or spec.tool_results is not None,
                "reasoning": spec.reasoning is not None}
    return tuple(k for k, reads in _READS_FOR_KIND.items() if declared[k] or reads & info.reads)


# --------------------------------------------------------------------------- checking
def _spec_side(spec: Spec, sample: Sample, gen: bool, variables: Mapping[str, Any],
               now: datetime) -> tuple[str | None, str | None]:
    try:
        return render(spec, sample.messages, add_generation_prompt=gen, variables=variables, tools=sample.tools,
                      now=now).text, None
    except RenderError as exc:
        return None, str(exc)


def check_template(spec: Spec, template: str, *, samples: int = 200, seed: int = 0,
                   tokens: Mapping[str, str] | None = None, variables: Mapping[str, Any] | None = None,
                   now: datetime | None = None, kinds: tuple[str, ...] | None = None, where: str = "<template>",
                   limits: Limits | None = None) -> CheckReport:
    """Render ``samples`` conversations with the spec and with ``template``; compare.

    Args:
        spec: the prompt format.
        template: a Jinja chat template, rendered as transformers renders it.
        samples: how many conversations (each rendered with and without the generation prompt).
        seed: picks the samples.
        tokens: ``bos_token`` / ``eos_token`` for the template.
        variables: template variables, passed to both sides as ``apply_chat_template`` takes them.
        now: the time both sides' clocks read (default: the time the check starts).
        kinds: agentic sample kinds to draw (default: :func:`sample_kinds`).
        where: names the template in errors (its file).
        limits: time and memory the template may use (:mod:`~template_forge.format.sandbox`).

    The template is compiled and rendered in a sandbox worker: whatever a render raises is
    that sample's answer (a difference, or a refusal both sides agree on).

    Raises:
        DataError: when the template is not valid Jinja, or compiling or rendering it runs
            past the time limit or kills the worker (naming the sample).

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> from template_forge.format.compiler import compile_template
        >>> spec = load_builtin("qwen2.5")
        >>> check_template(spec, compile_template(spec), samples=10).summary()
        '20 renders: 12 plain, 4 with tools, 4 with tool calls; 20 identical, 0 refused by both, 0 different'
    """
    now = now or datetime.now()
    variables = dict(variables or {})
    with TemplateSandbox(template, where=where, limits=limits) as box:
        info = TemplateInfo(box.compiled.reads)  # a syntax error is a DataError here, not on the first sample
        kinds = sample_kinds(spec, info) if kinds is None else kinds
        renders = [(i, sample, gen) for i, sample in enumerate(draw_samples(samples, seed=seed, kinds=kinds))
                   for gen in (False, True)]
        jobs = [Job(describe_sample(i, sample.kind, gen), sample.messages, sample.tools, gen)
                for i, sample, gen in renders]
        outcomes = box.render(jobs, kwargs={**(tokens or {}), **variables}, now=now)
    report = CheckReport()
    for (i, sample, gen), outcome in zip(renders, outcomes):
        expected, spec_error = _spec_side(spec, sample, gen, variables, now)
        report.renders += 1
        report.kinds[sample.kind] += 1
        if expected == outcome.text:
            report.identical += expected is not None
            report.both_refuse += expected is None
        else:
            report.mismatches.append(Mismatch(i, sample.messages, gen, expected, outcome.text, sample.kind,
                                              sample.tools, spec_error, outcome.error))
    return report
