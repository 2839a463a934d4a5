"""`tforge check`: a spec against an existing chat template or tokenizer folder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from template_forge.cli import main
from template_forge.errors import DataError
from template_forge.format.check import check_template, frozen_clock, inspect_template, load_template, sample_kinds
from template_forge.format.messages import check_messages
from template_forge.format.samples import AGENTIC_SHARE, draw_samples, sample_conversations
from template_forge.format.spec import load_builtin

from conftest import make_tokenizer, official

pytest.importorskip("transformers")


def test_samples_are_deterministic_and_cover_the_shapes():
    convs = sample_conversations(60, seed=3)
    assert convs == sample_conversations(60, seed=3) and convs != sample_conversations(60, seed=4)
    systems = {m[0]["content"] if m[0]["role"] == "system" else None for m in convs}
    assert systems == {None, "", "  Be brief.  ", "You are a helpful assistant."}
    assert {len([m for m in c if m["role"] != "system"]) for c in convs} == set(range(1, 7))
    assert {c[-1]["role"] for c in convs} == {"user", "assistant"}


def test_builtin_checks_clean_against_its_official_template(conformance):
    template, entry = official(conformance, "llama-3-instruct")
    report = check_template(load_builtin("llama3"), template, samples=60,
                            tokens={"bos_token": entry["bos_token"], "eos_token": entry["eos_token"]})
    assert report.ok and report.identical == report.renders == 120


def test_refusals_on_both_sides_count_as_agreement(conformance):
    template, _entry = official(conformance, "gemma-2-it")
    report = check_template(load_builtin("gemma"), template, samples=30, tokens={"bos_token": "<bos>"})
    assert report.ok and report.both_refuse > 0 and report.identical + report.both_refuse == report.renders


def test_difference_is_located(conformance):
    template, entry = official(conformance, "llama-3-instruct")
    report = check_template(load_builtin("llmforge-llama3"), template, samples=60,
                            tokens={"bos_token": entry["bos_token"]})
    assert not report.ok
    first = report.mismatches[0]
    assert first.messages[0] == {"role": "system", "content": ""}  # llmforge drops an empty system message
    text = first.describe()
    assert "first difference at character 36" in text and "system<|end_header_id|>" in text


def test_cli_exit_codes_and_tokens_from_the_tokenizer_folder(tmp_path):
    runner = CliRunner()
    make_tokenizer(tmp_path)  # bos_token <|begin_of_text|> in tokenizer_config.json
    assert runner.invoke(main, ["compile", "llama3", "--tokenizer-dir", str(tmp_path)]).exit_code == 0
    same = runner.invoke(main, ["check", "llama3", str(tmp_path), "--samples", "20"])
    # the compiled llama3 template names `tools` and `tool_calls` (to refuse them): both sides refuse those samples
    assert same.exit_code == 0 and "Same format." in same.output
    assert "40 renders: 24 plain, 8 with tools, 8 with tool calls; 24 identical, 16 refused by both, 0 different" in same.output
    differ = runner.invoke(main, ["check", "llmforge-llama3", str(tmp_path), "--samples", "20", "--show", "1"])
    assert differ.exit_code == 1
    assert differ.output.count("\n- sample ") == 1 and "first difference at character" in differ.output


def test_load_template_reads_what_transformers_reads(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>",
        "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}))
    assert load_template(tmp_path) == ("D", {"bos_token": "<s>", "eos_token": "</s>"})
    assert load_template(tmp_path, name="tool_use")[0] == "T"
    with pytest.raises(DataError, match=r"no chat template named 'rag'; it has default, tool_use"):
        load_template(tmp_path, name="rag")
    (tmp_path / "chat_template.jinja").write_text("J")
    assert load_template(tmp_path)[0] == "J"  # the .jinja file wins, as in transformers
    with pytest.raises(DataError, match=r"no such file or folder"):
        load_template(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no chat template \(neither chat_template.jinja nor"):
        load_template(empty)


# ---------------------------------------------------------------- agentic samples
ALL_KINDS = ("tools", "tool_calls", "reasoning")


def test_agentic_samples_are_deterministic_and_cover_the_shapes():
    samples = draw_samples(150, seed=5, kinds=ALL_KINDS)
    assert samples == draw_samples(150, seed=5, kinds=ALL_KINDS) and samples != draw_samples(150, seed=6, kinds=ALL_KINDS)
    plain = [s.messages for s in samples if s.kind == "plain"]
    assert plain == sample_conversations(150 - round(150 * AGENTIC_SHARE), seed=5)  # plain ones unchanged
    assert {s.kind: sum(t.kind == s.kind for t in samples) for s in samples} == {
        "plain": 90, "tools": 20, "tool_calls": 20, "reasoning": 20}
    for s in samples:
        check_messages(s.messages)  # valid conversations: every result answers an earlier call
    assert all(s.tools for s in samples if s.kind == "tools")
    assert all(s.tools is None for s in samples if s.kind in ("plain", "reasoning"))
    calls = [m["tool_calls"] for s in samples for m in s.messages if "tool_calls" in m]
    assert {len(c) for c in calls} == {1, 2, 3}  # single and parallel
    args = [c["function"]["arguments"] for cs in calls for c in cs]
    assert any(isinstance(a, dict) and any(isinstance(v, dict) for v in a.values()) for a in args)  # nested
    assert any(isinstance(a, str) and "\\u" in a for a in args) and any(isinstance(a, str) and "日本語" in a for a in args)
    results = [m for s in samples for m in s.messages if m["role"] == "tool"]
    assert results and all(len(m["tool_call_id"]) == 9 and m["name"] for m in results)
    assert any(s.messages[-1]["role"] == "tool" for s in samples)  # a prompt after the results
    answers = [m for s in samples if s.kind == "reasoning" for m in s.messages if m["role"] == "assistant"]
    assert any("reasoning_content" in m for m in answers) and any("reasoning_content" not in m for m in answers)


def test_tool_calls_come_without_definitions_when_nothing_reads_them():
    samples = draw_samples(20, kinds=("tool_calls",))
    assert [s.kind for s in samples].count("tool_calls") == 8 and all(s.tools is None for s in samples)


def test_what_the_template_reads_picks_the_sample_kinds(conformance):
    hermes = (conformance / "modern" / "templates" / "hermes-3-tool-use.jinja").read_text()
    chatml = (conformance / "templates" / "chatml.jinja").read_text()
    info = inspect_template(hermes)
    assert {"bos_token", "tools", "tool_calls", "messages"} <= info.reads
    assert sample_kinds(load_builtin("chatml"), info) == ("tools", "tool_calls")
    assert sample_kinds(load_builtin("chatml"), inspect_template(chatml)) == ()
    assert sample_kinds(load_builtin("qwen3"), inspect_template(chatml)) == ALL_KINDS  # the spec's side
    assert inspect_template(chatml).missing_tokens({}) == []
    assert info.missing_tokens({"eos_token": "<|im_end|>"}) == ["bos_token"]


def test_syntax_error_names_the_line():
    with pytest.raises(DataError, match=r"t\.jinja:2: the chat template is not valid Jinja \(unexpected '}'\):\n  \{\{ x \}"):
        inspect_template("ok\n{{ x }\n", where="t.jinja")


@pytest.mark.parametrize("template,error", [
    ("{% for t in tools %}{{ t }}{% endfor %}", "TypeError: 'NoneType' object is not iterable"),
    ("{{ 1 // 0 }}", "ZeroDivisionError: integer division or modulo by zero"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError: maximum recursion depth exceeded"),
    ("{{ raise_exception('no system role') }}", "TemplateError: no system role"),
])
def test_any_exception_of_the_template_is_a_refusal(template, error):
    report = check_template(load_builtin("chatml"), template, samples=3)
    assert report.renders == 6 and len(report.mismatches) == 6
    text = report.mismatches[0].describe()
    assert f"the template raises {error}" in text and "the spec renders it" in text and "messages: [" in text


def test_the_spec_refusing_what_the_template_raises_on_is_agreement():
    # gemma refuses a system message; this template raises on one and renders like gemma otherwise
    gemma = load_builtin("gemma")
    from template_forge.format.compiler import compile_template

    template = ("{% if messages and messages[0].role == 'system' %}{{ {}['x']['y'] }}{% endif %}"
                + compile_template(gemma))
    report = check_template(gemma, template, samples=24)
    assert report.ok and report.both_refuse == 36 and report.identical == 12


def test_frozen_clock_freezes_strftime_now_for_the_block_only():
    from datetime import datetime

    from transformers.utils.chat_template_utils import render_jinja_template

    template = "{{ strftime_now('%Y-%m-%d') }}"

    def rendered():
        return render_jinja_template(conversations=[[]], chat_template=template)[0][0]

    with frozen_clock(template, datetime(1999, 12, 31, 23, 59)):
        assert rendered() == "1999-12-31"
    assert rendered() == datetime.now().strftime("%Y-%m-%d")


def test_agentic_builtin_checks_clean_against_its_official_template(conformance):
    template = (conformance / "modern" / "templates" / "qwen3.jinja").read_text()
    report = check_template(load_builtin("qwen3"), template, samples=40)
    assert report.ok and report.identical == report.renders == 80
    assert report.kinds == {"plain": 48, "tools": 12, "tool_calls": 10, "reasoning": 10}
    report = check_template(load_builtin("qwen3"), template, samples=40, variables={"enable_thinking": False})
    assert report.ok and report.identical == 80


def test_agentic_difference_is_reported_with_its_tools(conformance):
    template = (conformance / "modern" / "templates" / "hermes-3-tool-use.jinja").read_text()
    report = check_template(load_builtin("chatml"), template, samples=20, tokens={"bos_token": "<|begin_of_text|>"})
    assert report.kinds == {"plain": 24, "tools": 8, "tool_calls": 8} and not report.ok
    shown = report.examples(3)
    assert [m.kind for m in shown] == ["plain", "tools", "tool_calls"]
    assert "the spec refuses it (this format does not render tool definitions" in shown[1].describe()
    assert "\n  tools: get_weather" in shown[1].describe()
    assert report.summary().endswith("40 different (24 plain, 8 with tools, 8 with tool calls)")
