"""`tforge check` end to end: exit codes (0 same, 1 differs, 2 cannot run), the template's
exceptions reported as refusals, the bos/eos warning, typed --var values, --now, and
agentic samples against the official templates."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from template_forge.cli import main

from conftest import ROOT

pytest.importorskip("transformers")

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def runner():
    return CliRunner()


def _check(runner, *args):
    return runner.invoke(main, ["check", *map(str, args)])


def test_template_raising_any_exception_is_a_difference_not_a_traceback(runner, conformance):
    hermes = conformance / "modern" / "templates" / "hermes-3-tool-use.jinja"
    result = _check(runner, "chatml", hermes, "--bos-token", "<|begin_of_text|>", "--eos-token", "<|im_end|>",
                    "--samples", "40", "--show", "3")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "80 renders: 48 plain, 16 with tools, 16 with tool calls; 0 identical" in result.output
    assert ("- sample 0 (plain, without generation prompt): the template raises TypeError: 'NoneType' object is "
            "not iterable; the spec renders it.\n  messages: [{\"role\": \"user\"") in result.output
    assert "the spec refuses it (this format does not render tool definitions" in result.output


@pytest.mark.parametrize("case,message", [
    ("syntax", "bad.jinja:2: the chat template is not valid Jinja (unexpected '}'):\n  {{ m.content }"),
    ("missing", "missing.jinja: no such file or folder"),
    ("undecodable", "binary.jinja: cannot read the chat template ('utf-8' codec can't decode"),
    ("spec", "`nope` is neither a file nor a built-in format"),
    ("broken config", "tokenizer_config.json:1: not valid JSON"),
    ("unknown var", "--var: unknown template variable `x`; this format declares: none."),
])
def test_a_check_that_cannot_run_is_a_usage_error(runner, tmp_path, case, message):
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    (tmp_path / "binary.jinja").write_bytes(b"\xff\xfe{{ x }}")
    (tmp_path / "ok.jinja").write_text(CHATML)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text('{"a": 1,}')
    spec, template, extra = {
        "syntax": ("chatml", "bad.jinja", []), "missing": ("chatml", "missing.jinja", []),
        "undecodable": ("chatml", "binary.jinja", []), "spec": ("nope", "ok.jinja", []),
        "broken config": ("chatml", "tok", []), "unknown var": ("chatml", "ok.jinja", ["--var", "x=1"]),
    }[case]
    result = _check(runner, spec, tmp_path / template, *extra)
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.output and "renders" not in result.output


def test_exit_0_when_the_same(runner, tmp_path):
    (tmp_path / "t.jinja").write_text(CHATML)
    result = _check(runner, "chatml", tmp_path / "t.jinja", "--samples", "20")
    assert result.exit_code == 0 and "40 renders: 40 plain; 40 identical" in result.output
    assert result.stderr == ""  # reads no bos/eos: no warning


def test_warns_when_the_template_reads_a_token_not_given(runner, tmp_path):
    (tmp_path / "t.jinja").write_text("{{ bos_token }}" + CHATML + "{{ eos_token }}")
    result = _check(runner, "chatml", tmp_path / "t.jinja", "--samples", "4")
    assert result.exit_code == 0  # empty, as chatml has none: the same here, but warned about
    for key in ("bos_token", "eos_token"):
        assert (f"warning: the template reads `{key}`, but no {key} string was given, so it renders as empty"
                in result.stderr)
    assert "Pass --bos-token (a tokenizer folder gives it from tokenizer_config.json)." in result.stderr
    given = _check(runner, "chatml", tmp_path / "t.jinja", "--samples", "4", "--bos-token", "", "--eos-token", "")
    assert "warning" not in given.stderr and given.exit_code == 0
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "chat_template.jinja").write_text("{{ bos_token }}" + CHATML)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    result = _check(runner, "chatml", folder, "--samples", "4")
    assert f"but {folder}/tokenizer_config.json has no `bos_token`, so it renders as empty" in result.stderr
    assert "eos_token" not in result.stderr


def test_var_values_are_typed_on_both_sides(runner, conformance):
    qwen3 = conformance / "modern" / "templates" / "qwen3.jinja"
    # the template gets the boolean False (the string "false" would be truthy there and give
    # another generation prompt), the spec its enable_thinking: false alternative
    result = _check(runner, "qwen3", qwen3, "--samples", "20", "--var", "enable_thinking=false")
    assert result.exit_code == 0, result.output
    quoted = _check(runner, "qwen3", qwen3, "--samples", "20", "--var", 'enable_thinking="false"')
    assert quoted.exit_code == 2
    assert "--var: template variable `enable_thinking` must be true or false, found str 'false'" in quoted.stderr


def test_now_freezes_the_template_clock(runner, conformance):
    template = conformance / "templates" / "llama-3.2-instruct.jinja"  # strftime_now("%d %b %Y")
    args = ["llama3.1", template, "--bos-token", "<|begin_of_text|>", "--samples", "30"]
    same_day = _check(runner, *args, "--now", "2024-07-26")  # the built-in's fixed date_string
    assert same_day.exit_code == 0, same_day.output
    other_day = _check(runner, *args, "--now", "2026-01-31T12:00", "--show", "1")
    assert other_day.exit_code == 1
    assert "spec:     'owledge Date: December 2023\\nToday Date: 26 Jul 2024" in other_day.output
    assert "template: 'owledge Date: December 2023\\nToday Date: 31 Jan 2026" in other_day.output
    assert _check(runner, *args, "--now", "yesterday").exit_code == 2


def test_now_reaches_a_clock_variable_of_the_spec(runner, conformance, tmp_path):
    # llama3.1 with a clock instead of the fixed date: Llama 3.2's format
    text = (ROOT / "templates" / "llama3.1.yaml").read_text(encoding="utf-8")
    assert 'date_string: "26 Jul 2024"' in text
    spec = tmp_path / "llama3.2.yaml"
    spec.write_text(text.replace('date_string: "26 Jul 2024"', 'date_string: {strftime: "%d %b %Y"}'))
    template = conformance / "templates" / "llama-3.2-instruct.jinja"
    result = _check(runner, spec, template, "--bos-token", "<|begin_of_text|>", "--samples", "30",
                    "--now", "2026-01-31T12:00")
    assert result.exit_code == 0, result.output
    rendered = runner.invoke(main, ["render", str(spec), "-", "--plain", "--now", "2026-01-31T12:00"],
                             input=json.dumps([{"role": "user", "content": "Hi"}]))
    assert rendered.exit_code == 0 and "Today Date: 31 Jan 2026\n" in rendered.output


@pytest.mark.parametrize("builtin,where,official,kinds", [
    ("qwen3", "modern/templates", "qwen3", "48 plain, 12 with tools, 10 with tool calls, 10 with reasoning"),
    ("qwen2.5", "templates", "qwen2.5-instruct", "48 plain, 16 with tools, 16 with tool calls"),
])
def test_agentic_builtins_check_clean(runner, conformance, builtin, where, official, kinds):
    result = _check(runner, builtin, conformance / where / f"{official}.jinja", "--samples", "40")
    assert result.exit_code == 0, result.output
    assert f"80 renders: {kinds}; 80 identical, 0 refused by both, 0 different. Same format." in result.output
