"""`tforge check`: a spec against an existing chat template or tokenizer folder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from template_forge.cli import main
from template_forge.errors import DataError
from template_forge.format.check import check_template, load_template, sample_conversations
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
    template, entry = official(conformance, "gemma-2-it")
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
    assert same.exit_code == 0 and "40 renders, 40 identical" in same.output and "Same format." in same.output
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
