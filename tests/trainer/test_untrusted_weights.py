"""Base weights, adapters and tokenizers that would run code when loaded are refused before
the first step, with how to convert them: ``auto_map`` (trust_remote_code), ``*.py`` files,
pickled weights only. Planted pickles never run; no step is taken, no checkpoint written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from template_forge.errors import ConfigError, DataError  # noqa: E402
from tforge_trainer.config import load_config  # noqa: E402
from tforge_trainer.recipe import train  # noqa: E402

from trainer_kit import Planted, make_model, make_run  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("base") / "tiny-llama")


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **changes}))


def pickled_only(folder: Path, sentinel: Path, name: str) -> None:
    for p in folder.glob("*.safetensors"):
        p.unlink()
    torch.save({"weight": Planted(sentinel)}, folder / name)


BASE_CASES = {
    "config auto_map": (lambda d, s: edit_json(d / "config.json", auto_map={"AutoModelForCausalLM": "evil.Evil"}),
                        r"config.json has `auto_map` \(AutoModelForCausalLM\)"),
    "modeling code": (lambda d, s: (d / "modeling_evil.py").write_text(f"open({str(s)!r}, 'w')\n"),
                      r"holds Python code \(modeling_evil.py\)"),
    "tokenizer auto_map": (lambda d, s: edit_json(d / "tokenizer_config.json",
                                                  auto_map={"AutoTokenizer": ["tok.EvilTokenizer", None]}),
                           r"tokenizer_config.json has `auto_map` \(AutoTokenizer\)"),
    "tokenizer code": (lambda d, s: (d / "tokenization_evil.py").write_text(f"open({str(s)!r}, 'w')\n"),
                       r"holds Python code \(tokenization_evil.py\)"),
    "bin only": (lambda d, s: pickled_only(d, s, "pytorch_model.bin"),
                 r"only pickled weights \(pytorch_model.bin\), no \*.safetensors"),
    "pt only": (lambda d, s: pickled_only(d, s, "model.pt"), r"only pickled weights \(model.pt\)"),
}


def assert_refused_before_step_1(config: Path, match: str, sentinel: Path) -> None:
    cfg, _ = load_config(config, ())
    said: list[str] = []
    with pytest.raises(ConfigError, match=rf"(?s){match}.*never runs code.*safe_serialization=True"):
        train(cfg, progress=False, log=said.append)
    out = config.parent / "out"
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    assert not any(m.startswith("step ") or m.startswith("training ") for m in said), said
    assert not sentinel.exists()


@pytest.mark.parametrize("case", list(BASE_CASES))
def test_untrusted_base_folders_are_refused_before_the_first_step(tmp_path, model_dir, case):
    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    damage, match = BASE_CASES[case]
    sentinel = tmp_path / "planted-code-ran"
    damage(base, sentinel)
    assert_refused_before_step_1(make_run(tmp_path, model=base), match, sentinel)


def adapter_folder(folder: Path) -> Path:
    folder.mkdir()
    edit_json(folder / "adapter_config.json", peft_type="LORA", r=4, target_modules=["q_proj", "v_proj"])
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


ADAPTER_CASES = {
    "auto_map": (lambda d, s: edit_json(d / "adapter_config.json", auto_map={"base_model_class": "evil.Evil"}),
                 r"initial_adapter_model_ckpt_path.*adapter_config.json has `auto_map`"),
    "bin only": (lambda d, s: ((d / "adapter_model.safetensors").unlink(),
                               torch.save({"w": Planted(s)}, d / "adapter_model.bin")),
                 r"only pickled weights \(adapter_model.bin\), no adapter_model.safetensors"),
}


@pytest.mark.parametrize("case", list(ADAPTER_CASES))
def test_untrusted_adapters_are_refused_before_the_first_step(tmp_path, model_dir, case):
    adapter = adapter_folder(tmp_path / "adapter")
    damage, match = ADAPTER_CASES[case]
    sentinel = tmp_path / "planted-code-ran"
    damage(adapter, sentinel)
    config = make_run(tmp_path, model=model_dir, initial_adapter_model_ckpt_path=str(adapter))
    assert_refused_before_step_1(config, match, sentinel)


def test_every_problem_is_reported_at_once(tmp_path, model_dir):
    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    BASE_CASES["config auto_map"][0](base, None)
    pickled_only(base, tmp_path / "planted-code-ran", "pytorch_model.bin")
    cfg, _ = load_config(make_run(tmp_path, model=base), ())
    with pytest.raises(ConfigError, match=r"(?s)2 problems.*auto_map.*only pickled weights"):
        train(cfg, progress=False, log=lambda m: None)


def test_the_tokenizer_is_loaded_without_remote_code_before_the_first_step(monkeypatch, tmp_path, model_dir):
    """The final output saves the tokenizer loaded at the start: a tokenizer transformers
    cannot load fails the run before step 1, not after the last one."""
    import transformers

    seen = []

    def fake(path, **kwargs):
        seen.append(kwargs)
        raise ValueError("custom tokenizer class needs code")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    cfg, _ = load_config(make_run(tmp_path, model=model_dir), ())
    with pytest.raises(DataError, match=r"cannot load the tokenizer beside the weights \(custom tokenizer class"):
        train(cfg, progress=False, log=lambda m: None)
    assert seen == [{"trust_remote_code": False}]
    assert not (tmp_path / "out" / "checkpoints").exists()
