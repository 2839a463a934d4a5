"""examples/llama-guard-2: the data preparation the walkthrough runs, and its config as the
trainer reads it. (`make demo` runs the whole walkthrough, training included.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from template_forge import load_spec, render
from tforge_trainer.config import load_config

HERE = Path(__file__).resolve().parents[1] / "examples" / "llama-guard-2"


@pytest.fixture(scope="module")
def prep():
    spec = importlib.util.spec_from_file_location("lg2_prepare_data", HERE / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_records_become_guard_prompts_with_an_empty_user_turn_and_the_verdict(prep, tmp_path):
    assert prep.main([str(HERE / "raw.jsonl"), "-o", str(tmp_path), "--seed", "0"]) == 0
    raw = [json.loads(line) for line in (HERE / "raw.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for f in ("train.jsonl", "valid.jsonl") for line in (tmp_path / f).read_text().splitlines()]
    assert len(rows) == len(raw) == 80
    spec = load_spec("verbatim")
    verdicts = {"safe": 0, "unsafe": 0}
    for row in rows:
        system, user, assistant = row["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert user["content"] == ""
        assert system["content"].startswith("[INST] Task: Check if there is unsafe content in '")
        assert system["content"].endswith(" [/INST]") and "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes. \n" in \
            system["content"]
        first, *rest = assistant["content"].split("\n")
        verdicts[first] += 1
        assert (first == "safe" and not rest) or (first == "unsafe" and rest[0].startswith("S") and " " not in rest[0])
        # verbatim: the rendered text is the prompt followed by the verdict, nothing added
        assert render(spec, row["messages"]).text == system["content"] + assistant["content"]
    assert verdicts == {"safe": 42, "unsafe": 38}


def test_prompts_equal_meta_llama_guard_2s_own_chat_template(prep, tmp_path, conformance):
    template = conformance / "templates" / "llama-guard-2.jinja"
    if not template.is_file():
        pytest.skip(f"{template} absent")
    assert prep.main([str(HERE / "raw.jsonl"), "-o", str(tmp_path), "--check-template", str(template)]) == 0


def test_bad_records_are_all_reported_and_nothing_is_written(prep, tmp_path, capsys):
    bad = tmp_path / "raw.jsonl"
    bad.write_text(json.dumps({"conversation": [{"role": "user", "content": "hi"}], "label": "Safe"}) + "\n"
                   + json.dumps({"conversation": [{"role": "user", "content": "x"}], "label": "unsafe",
                                 "categories": ["S12"]}) + "\n")
    assert prep.main([str(bad), "-o", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert 'raw.jsonl:1: label must be "safe" or "unsafe", found "Safe"' in err
    assert 'raw.jsonl:2: unknown category code(s) "S12"' in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()


def test_the_example_config_is_an_llmforge_config_the_trainer_reads(tmp_path):
    cfg, warnings = load_config(HERE / "config.yaml")
    assert cfg.model_id == "meta-llama/Meta-Llama-3-8B" and cfg.format_name() == "verbatim"
    assert cfg.initial_base_model_ckpt_path == str(HERE / "work" / "tiny-llama3")
    assert len(warnings) == 1 and "deepspeed" in warnings[0] and "worker_resources" in warnings[0]
