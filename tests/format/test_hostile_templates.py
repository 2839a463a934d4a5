"""Hostile chat templates through `tforge check` (the library and the CLI): every exception
class, runaway loops, memory bombs, deep recursion, include/import/extends, sandbox escapes.
Each ends in a difference naming the sample or a DataError naming it, never a traceback or
a hang (the fuzz asserts the latter by finishing: the sandbox's time limit is cut to 0.5 s)."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.cli import main
from template_forge.errors import DataError
from template_forge.format import sandbox
from template_forge.format.check import check_template
from template_forge.format.compiler import compile_template
from template_forge.format.sandbox import Job, Limits, TemplateSandbox, render_untrusted
from template_forge.format.spec import load_builtin

pytest.importorskip("transformers")

FUZZ = settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", 25)), derandomize=not os.environ.get("TFORGE_RANDOM"),
                deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FAST = Limits(time_s=0.5, total_time_s=5.0)

#: What a template can do wrong, one fragment each (the fuzz joins a few, some inside a loop).
HOSTILE = [
    "{{ raise_exception('refused') }}", "{{ 1 / 0 }}", "{{ messages + 1 }}", "{{ messages[99] }}",
    "{{ messages | first | attr('nope') | int(base=99) }}", "{{ {}['missing'].x.y }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{{ range(10 ** 6) | list }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10 ** 10 }}", "{{ ('x' * 10 ** 5) * (messages | length * 10 ** 5) }}",
    "{% include 'other.jinja' %}", "{% import 'm.jinja' as m %}", "{% extends 'base.jinja' %}",
    "{{ messages.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__ }}",
    "{{ namespace(_x=1) }}", "{% set ns = namespace() %}{% set ns.__dict__ = 1 %}", "{{ lipsum(n=10 ** 7) }}",
    "{{ dict.fromkeys(range(99999)) | tojson * 99 }}", "{{ '%s' % messages * 10 ** 6 }}",
    "{{ 10 ** 10 ** 10 }}", "{{ (" * 150 + "1" + ")" * 150 + " }}", "{% for %}", "{{ strftime_now(7) }}",
    "{% for m in messages %}{{ m.content }}{% endfor %}", "{{ bos_token ~ messages[0]['content'] }}",
]


def _assert_named(report_or_error) -> None:
    if isinstance(report_or_error, DataError):
        text = str(report_or_error)
        assert text.startswith("<template>") and ("sample " in text or "Jinja" in text or "compiled" in text), text
        return
    for mismatch in report_or_error.mismatches:
        assert mismatch.describe().startswith(f"sample {mismatch.sample} (")


@st.composite
def hostile_templates(draw) -> str:
    parts = draw(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=3))
    if draw(st.booleans()):
        parts = ["{% for message in messages %}"] + parts + ["{% endfor %}"]
    if draw(st.booleans()):
        parts.insert(0, "{% if add_generation_prompt %}ok{% else %}")
        parts.append("{% endif %}")
    return "".join(parts)


@FUZZ
@given(hostile_templates())
def test_fuzzed_templates_end_in_a_named_difference_or_error(template):
    try:
        report = check_template(load_builtin("chatml"), template, samples=1, limits=FAST)
    except DataError as exc:
        report = exc
    _assert_named(report)


@FUZZ
@given(hostile_templates())
def test_fuzzed_templates_through_the_cli(tmp_path, template):
    path = tmp_path / "t.jinja"
    path.write_text(template, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sandbox, "TIME_LIMIT_S", 0.5)
        result = CliRunner().invoke(main, ["check", "chatml", str(path), "--samples", "1"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (1, 2), result.output
    assert ("sample 0 (" in result.output) or (f"{path}" in result.output and "Error" in result.output), result.output


@pytest.mark.parametrize("template, pattern", [
    ("{{ 1 / 0 }}", r"^sample 0 \(plain, without generation prompt\): the template raises ZeroDivisionError"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", r"the template raises RecursionError"),
    ("{{ range(10 ** 6) | list }}", r"the template raises OverflowError: Range too big"),
    ("{% include 'x.jinja' %}", r"the template raises TypeError: no loader for this environment specified"),
    ("{{ 'x' * 10 ** 10 }}", r"the template raises MemoryError: it went past the sandbox's memory limit"),
    ("{{ messages.__class__.__mro__ }}", r"the template raises SecurityError: access to attribute '__class__'"),
    ("{% for i in range(99999) %}{{ 'x' * 99 }}{% endfor %}", r"OutputTooLong: it wrote 9899901 characters"),
])
def test_each_failure_is_a_difference_naming_the_sample(template, pattern):
    report = check_template(load_builtin("chatml"), template, samples=1, limits=FAST)
    assert report.renders == 2 and len(report.mismatches) == 2
    assert re.search(pattern, report.mismatches[0].describe())


def test_a_runaway_loop_is_stopped_and_names_the_sample_that_was_rendering():
    template = ("{% if messages | length > 2 %}{% for i in range(100000) %}{% for j in range(100000) %}"
                "{% endfor %}{% endfor %}{% endif %}{{ messages | length }}")
    jobs = [Job(f"sample {k}", [{"role": "user", "content": "x"}] * (k + 1)) for k in range(4)]
    with pytest.raises(DataError, match=r"^t\.jinja: sample 2: the chat template took more than 0\.5 s .*tforge stopped it"):
        render_untrusted(template, jobs, where="t.jinja", limits=FAST)


def test_a_total_time_limit_bounds_many_slow_renders():
    slow = "{% for i in range(30000) %}{{ i }}{% endfor %}"
    jobs = [Job(f"sample {k}", []) for k in range(400)]
    with pytest.raises(DataError, match=r"ran past 0\.3 s for all renders together"):
        render_untrusted(slow, jobs, limits=Limits(time_s=5, total_time_s=0.3))


def test_compile_errors_and_hostile_compiles_are_data_errors():
    with pytest.raises(DataError, match=r"^t\.jinja:2: the chat template is not valid Jinja .*:\n  \{% if %\}"):
        TemplateSandbox("ok\n{% if %}", where="t.jinja")
    with pytest.raises(DataError, match=r"^<template>: the chat template cannot be compiled \(RecursionError"):
        TemplateSandbox("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}")
    with pytest.raises(DataError, match=r"is 1000001 characters long, more than 1000000"):
        TemplateSandbox("x" * 1_000_001)


def test_a_crashed_worker_names_the_sample(monkeypatch):
    # a worker killed from outside (the kernel's OOM killer, a segfault in an extension)
    jobs = [Job("sample 0", []), Job("sample 1", [])]
    with TemplateSandbox("{{ messages | length }}") as box:
        box._proc.kill()
        with pytest.raises(DataError, match=r"sample 0: the chat template stopped the renderer \(killed"):
            box.render(jobs)


def test_the_sandbox_renders_exactly_as_transformers_does():
    from transformers.utils.chat_template_utils import render_jinja_template

    spec = load_builtin("qwen2.5")
    template = compile_template(spec, training=True)  # the `generation` extension too
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "{{ x }} ü"},
                {"role": "assistant", "content": "A"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    (direct,), _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                         add_generation_prompt=True)
    [outcome] = render_untrusted(template, [Job("s", messages, tools, True)])
    assert outcome.text == direct and outcome.error is None
