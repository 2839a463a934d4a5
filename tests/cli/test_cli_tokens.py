"""`tforge tokenize | inspect | convert-tokenizer`, end to end."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from template_forge.cli import main
from template_forge.data.tokenized import TokenizedDataset
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import encode

from conftest import REAL_TOKENIZERS, _vendor_file

CONV = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(CONV), json.dumps({"messages": [{"role": "user", "content": "x"}]}), json.dumps(CONV)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tokenize_stops_at_the_first_bad_line(runner, data, tmp_path, real_tokenizer):
    out = tmp_path / "out"
    result = runner.invoke(main, ["tokenize", str(data), "-f", "llama3", "-t", str(real_tokenizer("llama3")),
                                  "-o", str(out), "--workers", "1"])
    assert result.exit_code == 1
    assert f"Error: {data}:2: no assistant message" in result.output
    assert not out.exists()


def test_tokenize_skip_then_inspect(runner, data, tmp_path, real_tokenizer):
    out = tmp_path / "out"
    tok = str(real_tokenizer("llama3"))
    result = runner.invoke(main, ["tokenize", str(data), "-f", "llama3", "-t", tok, "-o", str(out),
                                  "--on-error", "skip", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 conversations" in result.output and "skipped 1 of 3 lines" in result.output
    assert "no assistant turn  (no_assistant)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["path"] == tok and manifest["spec"]["name"] == "llama3"
    ds = TokenizedDataset(out)
    want = encode(load_builtin("llama3"), tok, CONV["messages"])
    assert ds[1].input_ids.tolist() == want.input_ids.tolist() and ds.line(1) == 3

    html = tmp_path / "view.html"
    shown = runner.invoke(main, ["inspect", str(out), "--row", "1", "--table", "--html", str(html)])
    assert shown.exit_code == 0, shown.output
    rows = [line.split(None, 3) for line in shown.output.splitlines()[1:] if line.strip() and line.split()[0].isdigit()]
    assert [int(r[1]) for r in rows] == want.input_ids.tolist()
    assert [r[2] == "1" for r in rows] == [bool(m) for m in want.loss_mask.tolist()]
    assert f"row 1 (line 3): {want.num_tokens} tokens, {want.num_trained} trained" in shown.output
    page = html.read_text()
    assert len(re.findall(r'class="t on[^"]*" title=', page)) == want.num_trained
    assert len(re.findall(r'class="t[^"]*" title=', page)) == want.num_tokens

    far = runner.invoke(main, ["inspect", str(out), "--row", "7"])
    assert far.exit_code == 1 and "has 2 rows (0 to 1); --row 7 is out of range" in far.output

    again = runner.invoke(main, ["tokenize", str(data), "-f", "llama3", "-t", tok, "-o", str(out), "--on-error", "skip"])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_inspect_a_conversation_file(runner, tmp_path, real_tokenizer):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(CONV))
    result = runner.invoke(main, ["inspect", str(path), "-f", "mistral-v1", "-t", str(real_tokenizer("mistral-v1")),
                                  "--color"])
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.output and "Hello!</s>" in click.unstyle(result.output).replace("↵\n", "\n")
    missing = runner.invoke(main, ["inspect", str(path)])
    assert missing.exit_code == 2 and "needs --format and --tokenizer" in missing.output


@pytest.mark.parametrize("name", ["llama3", "mistral-v3"])
def test_convert_tokenizer(runner, tmp_path, name, real_tokenizer):
    package, relative, kind = REAL_TOKENIZERS[name]
    out = tmp_path / name
    result = runner.invoke(main, ["convert-tokenizer", str(_vendor_file(package, relative)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"({kind}," in result.output
    assert (out / "tokenizer.json").read_text() == (real_tokenizer(name) / "tokenizer.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no lock or temp folder left beside it
    again = runner.invoke(main, ["convert-tokenizer", str(_vendor_file(package, relative)), "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output
    (out / "stale.txt").write_text("from before")
    replaced = runner.invoke(main, ["convert-tokenizer", str(_vendor_file(package, relative)), "-o", str(out),
                                    "--overwrite"])
    assert replaced.exit_code == 0 and not (out / "stale.txt").exists()


def test_tokenize_warns_when_the_tokenizer_does_not_fit_the_format(runner, tmp_path, real_tokenizer):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CONV) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(main, ["tokenize", str(data), "-f", "chatml", "-t", str(real_tokenizer("llama3")),
                                  "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: the assistant suffix '<|im_end|>\\n' holds no special token" in result.output
    assert json.loads((out / "manifest.json").read_text())["warnings"][0].startswith("the assistant suffix")


AGENTIC = {"messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "Call the tool.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "21 C"},
    {"role": "assistant", "content": "It is 21 C.", "reasoning_content": "Report it."}],
    "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather of a city.",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}


def test_inspect_shows_tools_calls_results_and_reasoning_by_kind(runner, tmp_path, real_tokenizer):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(AGENTIC) + "\n")
    tok = str(real_tokenizer("llama3"))
    page = tmp_path / "view.html"
    result = runner.invoke(main, ["inspect", str(path), "--line", "1", "-f", "qwen3", "-t", tok, "--table",
                                  "--html", str(page)])
    assert result.exit_code == 0, result.output
    rows = [line.split(None, 4) for line in result.output.splitlines()[1:] if re.match(r"\s+\d+ ", line)]
    kinds = {row[3]: row for row in rows if len(row) == 5 and not row[3].startswith("'")}
    assert {"tools", "assistant_calls", "tool", "assistant_reasoning"} <= set(kinds)
    # calls and reasoning are trained, definitions and results never
    trained = {kind for *_, flag, kind, _text in (r for r in rows if len(r) == 5) if flag == "1"}
    assert {"assistant_calls", "assistant_reasoning"} <= trained and not {"tools", "tool"} & trained
    html = page.read_text()
    for cls, label in (("k-tools", "tool definitions"), ("k-calls", "tool calls"), ("k-tool", "tool results"),
                       ("k-reasoning", "reasoning")):
        assert f'<span class="t {cls}">{label}</span>' in html and f" {cls}\" title=" in html
    coloured = runner.invoke(main, ["inspect", str(path), "--line", "1", "-f", "qwen3", "-t", tok, "--color"])
    assert "\x1b[4m" in coloured.output and "\x1b[46m" in coloured.output  # reasoning on cyan, trained: underlined
