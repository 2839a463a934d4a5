"""`tforge compile | render | formats`, end to end, including transformers reading what we write."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from template_forge.cli import main
from template_forge.cli.format import STYLES
from template_forge.cli.options import parse_value, parse_vars
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import SEGMENT_KINDS, render
from template_forge.format.spec import load_builtin

from conftest import make_tokenizer

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {{ there }}"},
        {"role": "assistant", "content": "Hello!"}]


@pytest.fixture
def runner():
    return CliRunner()


def test_compile_prints_the_template(runner):
    result = runner.invoke(main, ["compile", "llama3"])
    assert result.exit_code == 0, result.output
    assert result.output == compile_template(load_builtin("llama3")) + "\n"
    training = runner.invoke(main, ["compile", "llama3", "--training"])
    assert "{%- generation -%}" in training.output


def test_compile_to_file_is_atomic_and_exact(runner, tmp_path):
    out = tmp_path / "t.jinja"
    result = runner.invoke(main, ["compile", "chatml", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text() == compile_template(load_builtin("chatml"))
    assert [p.name for p in tmp_path.iterdir()] == ["t.jinja"]  # no temp files left behind


def test_tokenizer_dir_is_what_transformers_serves(runner, tmp_path):
    transformers = pytest.importorskip("transformers")
    make_tokenizer(tmp_path)
    config_before = json.loads((tmp_path / "tokenizer_config.json").read_text())
    result = runner.invoke(main, ["compile", "llama3", "--training", "--tokenizer-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert {k: v for k, v in config.items() if k != "chat_template"} == {
        k: v for k, v in config_before.items() if k != "chat_template"}  # other keys kept
    assert (tmp_path / "chat_template.jinja").read_text() == config["chat_template"]

    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    expected = render(load_builtin("llama3"), CONV)
    assert tok.apply_chat_template(CONV, tokenize=False) == expected.text
    out = tok.apply_chat_template(CONV, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "Hello!<|eot_id|>"


def test_tokenizer_dir_replaces_a_stale_jinja_file_and_creates_missing_config(runner, tmp_path):
    (tmp_path / "chat_template.jinja").write_text("stale")
    result = runner.invoke(main, ["compile", "phi3", "--tokenizer-dir", str(tmp_path / "new")])
    assert result.exit_code == 0
    result = runner.invoke(main, ["compile", "phi3", "--tokenizer-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / "chat_template.jinja").read_text() == compile_template(load_builtin("phi3"))
    assert json.loads((tmp_path / "new" / "tokenizer_config.json").read_text()) == {
        "chat_template": compile_template(load_builtin("phi3"))}


def test_broken_tokenizer_config_is_reported_and_nothing_is_written(runner, tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{\n  \"a\": 1,\n}")
    result = runner.invoke(main, ["compile", "chatml", "--tokenizer-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "tokenizer_config.json:3: not valid JSON" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer_config.json"]


def test_render_plain_and_coloured(runner, tmp_path):
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps({"messages": CONV}))
    plain = runner.invoke(main, ["render", "llama3", str(conv), "--plain"])
    assert plain.exit_code == 0 and plain.output == render(load_builtin("llama3"), CONV).text
    coloured = runner.invoke(main, ["render", "llama3", str(conv), "--color"])
    assert "\x1b[32m\x1b[1mHello!" in coloured.output  # trained text: bold green
    assert click.unstyle(coloured.output) == plain.output


def test_render_from_stdin_with_generation_prompt_and_variables(runner):
    result = runner.invoke(main, ["render", "llama3.1", "-", "--generation-prompt", "--plain", "--var",
                                  "date_string=01 Jan 2026"], input=json.dumps(CONV[:2]))
    assert result.exit_code == 0
    assert "Today Date: 01 Jan 2026" in result.output
    assert result.output.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
AGENTIC = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "Look it up.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18°C"},
    {"role": "assistant", "content": "18°C in Paris.", "reasoning_content": "Answer."},
]


def test_render_takes_tools_variables_and_the_clock(runner, tmp_path):
    conv = tmp_path / "agentic.json"
    conv.write_text(json.dumps({"messages": AGENTIC, "tools": TOOLS}))
    result = runner.invoke(main, ["render", "qwen3", str(conv), "--plain", "--var", "enable_thinking=false"])
    assert result.exit_code == 0, result.output
    assert result.output == render(load_builtin("qwen3"), AGENTIC, tools=TOOLS,
                                   variables={"enable_thinking": False}).text
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in result.output
    refused = runner.invoke(main, ["render", "chatml", str(conv)])
    assert refused.exit_code == 1 and "this format does not render tool definitions" in refused.output
    typed = runner.invoke(main, ["render", "qwen3", str(conv), "--var", 'enable_thinking="false"'])
    assert typed.exit_code == 1 and "must be true or false, found str 'false'" in typed.output
    assert runner.invoke(main, ["render", "qwen3", str(conv), "--now", "31/01/2026"]).exit_code == 2


def test_every_segment_kind_has_a_colour(runner, tmp_path):
    spec = load_builtin("qwen3")
    kinds = {seg.kind for gen in (False, True) for msgs in (AGENTIC, AGENTIC[:3])
             for seg in render(spec, msgs, tools=TOOLS, add_generation_prompt=gen).segments}
    agentic = {"tools", "assistant_calls", "assistant_reasoning", "assistant_end", "tool"}
    assert agentic <= kinds
    assert kinds <= set(STYLES) and set(SEGMENT_KINDS) == set(STYLES)  # no KeyError in _styled
    assert [k for k in agentic if any(STYLES[k] == STYLES[o] for o in STYLES if o != k)] == []  # their own colours
    conv = tmp_path / "agentic.json"
    conv.write_text(json.dumps({"messages": AGENTIC, "tools": TOOLS}))
    coloured = runner.invoke(main, ["render", "qwen3", str(conv), "--color"])
    assert coloured.exit_code == 0
    assert "\x1b[92m\x1b[1m<tool_call>" in coloured.output  # the call: bold bright green
    assert click.unstyle(coloured.output) == render(spec, AGENTIC, tools=TOOLS).text


def test_render_help_has_a_legend_of_every_kind(runner):
    text = runner.invoke(main, ["render", "--help"]).output
    assert [k for k in SEGMENT_KINDS if k not in text] == []


def test_var_values_are_typed():
    assert parse_vars(("enable_thinking=false", "a=TRUE", "b=null", "c=None", "n=-12", "x=0.5", "s=a=b", "e=")) == {
        "enable_thinking": False, "a": True, "b": None, "c": None, "n": -12, "x": "0.5", "s": "a=b", "e": ""}
    assert [parse_value(v) for v in ('"true"', "'12'", '"', "'x\"", "trueish", "1e3")] == [
        "true", "12", '"', "'x\"", "trueish", "1e3"]
    for bad in ("novalue", "=3"):
        with pytest.raises(click.BadParameter, match="expected NAME=VALUE"):
            parse_vars((bad,))


@pytest.mark.parametrize("args,pattern", [
    (["compile", "nope"], "Error: `nope` is neither a file nor a built-in format"),
    (["render", "llama3", "-"], "Error: -:1: invalid JSON at column 2"),
    (["render", "gemma", "-"], "Error: message 0: this format does not support a system message"),
])
def test_user_errors_exit_1_without_traceback(runner, args, pattern):
    stdin = json.dumps(CONV) if args[1] == "gemma" else "{bad"
    result = runner.invoke(main, args, input=stdin)
    assert result.exit_code == 1
    assert pattern in result.output
    assert "Traceback" not in result.output


def test_bad_spec_file_is_located(runner, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("system: '{instruction}'\nuser: '{instruction}'\nassistent: '{instruction}'\n")
    result = runner.invoke(main, ["compile", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:3, `assistent`: unknown field. Did you mean `assistant`?" in result.output


def test_usage_errors_stay_clicks(runner):
    assert runner.invoke(main, ["compile"]).exit_code == 2


def test_formats_lists_every_builtin(runner):
    result = runner.invoke(main, ["formats"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [l.split()[0] for l in lines] == builtin_names()
    assert any(l.startswith("llama3 ") and "meta-llama/Meta-Llama-3-8B-Instruct" in l for l in lines)


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tok")
    make_tokenizer(folder)
    return folder


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_served_by_autotokenizer(runner, tmp_path, tiny_tokenizer_dir, name):
    """What --tokenizer-dir writes, AutoTokenizer loads and apply_chat_template renders: for
    every built-in, both flavours, with and without the generation prompt."""
    import shutil

    import transformers

    spec = load_builtin(name)
    conv = CONV[1:] if spec.placement == "reject" else CONV
    # a format that always writes tool definitions (hermes-3) is given one tool
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}] \
        if spec.tools is not None and spec.tools.required else None
    for training in (False, True):
        folder = tmp_path / f"tok-{training}"
        shutil.copytree(tiny_tokenizer_dir, folder)
        args = ["compile", name, "--tokenizer-dir", str(folder)] + (["--training"] if training else [])
        assert runner.invoke(main, args).exit_code == 0
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
        assert tok.apply_chat_template(conv, tokenize=False, tools=tools) == render(spec, conv, tools=tools).text
        assert tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True, tools=tools) == render(
            spec, conv[:-1], add_generation_prompt=True, tools=tools).text

