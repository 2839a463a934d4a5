"""The training config: llmforge YAMLs read unchanged, overrides, located errors, the model
family check and the default formats."""

import json

import pytest
import yaml

from template_forge.errors import ConfigError
from tforge_trainer.config import config_from_dict, family_of, load_config, parse_override

BASE = {"model_id": "meta-llama/Meta-Llama-3-8B", "train_path": "train.jsonl", "output_dir": "out"}

# An llmforge config as its docs write one, keys it does not act on included.
LLMFORGE = """\
model_id: meta-llama/Meta-Llama-Guard-2-8B
train_path: s3://air-example-data/aegis/train.jsonl
valid_path: s3://air-example-data/aegis/test.jsonl
context_length: 4096
num_devices: 4
num_epochs: 3
train_batch_size_per_device: 8
eval_batch_size_per_device: 8
learning_rate: 1e-4
padding: "longest"
num_checkpoints_to_keep: 1
no_gradient_checkpoint: False
output_dir: /mnt/local_storage
deepspeed:
  config_path: deepspeed_configs/zero_3_offload_optim+param.json
flash_attention_2: True
worker_resources:
  accelerator_type:A10G: 0.001
generation_config:
  prompt_format:
    system: "{instruction}"
    user: "{instruction}"
    assistant: "{instruction} </s>"
    trailing_assistant: ""
    bos: ""
  stopping_sequences: ["</s>"]
lora_config:
  r: 8
  lora_alpha: 16
  lora_dropout: 0.05
  target_modules: [q_proj, v_proj, k_proj, o_proj, gate_proj, up_proj, down_proj]
  task_type: "CAUSAL_LM"
  modules_to_save: []
  bias: "none"
  fan_in_fan_out: false
  init_lora_weights: true
"""


def test_llmforge_config_is_read_unchanged_and_ignored_keys_make_one_warning(tmp_path):
    path = tmp_path / "llmforge.yaml"
    path.write_text(LLMFORGE)
    cfg, warnings = load_config(path)
    assert cfg.model_id == "meta-llama/Meta-Llama-Guard-2-8B"
    assert cfg.train_path.startswith("s3://") and cfg.output_dir == "/mnt/local_storage"
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)  # YAML 1.1 reads 1e-4 as text
    assert cfg.max_num_checkpoints == 1 and cfg.gradient_checkpointing is True  # llmforge spellings
    assert cfg.prompt_format["assistant"] == "{instruction} </s>"
    assert cfg.lora_config["target_modules"][-1] == "down_proj" and cfg.lora_config["bias"] == "none"
    assert len(warnings) == 1
    for key in ("num_devices", "padding", "deepspeed", "flash_attention_2", "worker_resources",
                "generation_config.stopping_sequences"):
        assert key in warnings[0]


def test_unknown_keys_are_located_with_a_did_you_mean(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_id: m\ntrain_path: t.jsonl\noutput_dir: o\nprompt_format: chatml\n"
                    "learning_rat: 1e-4\nlora_config:\n  r: 8\n  lora_alfa: 16\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "2 problems" in text
    assert f"{path}:5, `learning_rat`: unknown key. Did you mean `learning_rate`?" in text
    assert f"{path}:8, `lora_config.lora_alfa`: not a PEFT LoraConfig key. Did you mean `lora_alpha`?" in text


def test_bad_values_and_missing_keys_are_all_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_id: m\nprompt_format: chatml\nnum_epochs: 0\nlr_scheduler_type: step\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert f"{path}:3, `num_epochs`" in text and "greater than or equal to 1" in text
    assert f"{path}:4, `lr_scheduler_type`" in text and "'cosine' or 'linear'" in text
    assert "`train_path`: is required" in text and "`output_dir`: is required" in text


def test_overrides_nested_keys_and_paths(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "valid_path": "v.jsonl", "lora_config": {"r": 8}}))
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_config(path, ["lora_config.r=16", "learning_rate=2e-4", "train_path=here.jsonl",
                                "checkpoint_and_evaluation_frequency.unit=steps"])
    assert cfg.lora_config["r"] == 16 and cfg.lora_config["lora_alpha"] == 16  # merged with the defaults
    assert cfg.learning_rate == 2e-4
    assert cfg.train_path == str(tmp_path / "here.jsonl")  # overrides: against the current directory
    assert cfg.valid_path == str(tmp_path / "sub" / "v.jsonl")  # YAML: against the YAML's folder
    assert cfg.checkpoint_and_evaluation_frequency.unit == "steps"
    with pytest.raises(ConfigError, match="command line, `num_epoch`: unknown key. Did you mean `num_epochs`"):
        load_config(path, ["num_epoch=3"])
    with pytest.raises(ConfigError, match="is not a key=value override"):
        parse_override("learning_rate")


def test_default_format_from_the_model_family_and_its_absence():
    cfg, _ = config_from_dict(dict(BASE))
    assert cfg.format_name() == "llama3"
    cfg, _ = config_from_dict({**BASE, "model_id": "mistralai/Mistral-7B-Instruct-v0.3"})
    assert cfg.format_name() == "mistral-v3"
    with pytest.raises(ConfigError, match="no default format .*use `prompt_format: verbatim`"):
        config_from_dict({**BASE, "model_id": "meta-llama/Meta-Llama-Guard-2-8B"})
    with pytest.raises(ConfigError, match="has no default format"):
        config_from_dict({**BASE, "model_id": "my-org/my-model"})
    cfg, _ = config_from_dict({**BASE, "model_id": "my-org/my-model", "prompt_format": "chatml"})
    assert cfg.format_name() == "chatml"


def test_a_bad_prompt_format_is_reported_in_the_config():
    with pytest.raises(ConfigError, match="prompt_format.*must contain"):
        config_from_dict({**BASE, "generation_config": {"prompt_format": {"system": "x", "user": "{instruction}",
                                                                          "assistant": "{instruction}"}}})
    with pytest.raises(ConfigError, match="Did you mean `llama3`"):
        config_from_dict({**BASE, "prompt_format": "lama3"})


def test_family_table():
    assert family_of("meta-llama/Meta-Llama-3-8B-Instruct").default_format == "llama3"
    assert family_of("meta-llama/Llama-3.1-8B-Instruct").default_format == "llama3.1"
    assert family_of("meta-llama/Llama-2-7b-chat-hf").vocab_size == 32000
    assert family_of("HuggingFaceH4/zephyr-7b-beta").model_types == ("mistral",)


@pytest.mark.parametrize("weights, ok", [
    ({"model_type": "llama", "vocab_size": 128256}, True),  # Llama Guard 2's own config.json: a Llama 3 8B
    ({"model_type": "mistral", "vocab_size": 32000}, False),
    ({"model_type": "llama", "vocab_size": 32000}, False),  # Llama 2 weights
])
def test_base_weights_must_be_of_the_family_model_id_names(tmp_path, weights, ok):
    pytest.importorskip("torch")
    from tforge_trainer.weights import check_family

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], **weights}))
    cfg, _ = config_from_dict({**BASE, "initial_base_model_ckpt_path": str(tmp_path)})
    if ok:
        assert check_family(cfg, tmp_path, str(tmp_path))["vocab_size"] == 128256
    else:
        with pytest.raises(ConfigError) as exc:
            check_family(cfg, tmp_path, str(tmp_path))
        text = str(exc.value)
        assert str(tmp_path / "config.json") in text
        assert f"model_type `{weights['model_type']}` with vocab_size {weights['vocab_size']}" in text
        assert "names the Llama 3 family (model_type `llama`, vocab_size 128256)" in text


def test_a_continued_adapter_is_checked_against_the_run(tmp_path):
    pytest.importorskip("torch")
    from tforge_trainer.weights import check_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 16, "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct"}))
    warnings: list[str] = []
    cfg, _ = config_from_dict({**BASE, "lora_config": {"r": 16, "target_modules": ["q_proj", "v_proj"]}})
    assert check_adapter(cfg, tmp_path, "adapter", warnings.append)["r"] == 16
    assert len(warnings) == 1 and "trained on `meta-llama/Meta-Llama-3-8B-Instruct`" in warnings[0]
    cfg, _ = config_from_dict({**BASE, "model_id": "meta-llama/Meta-Llama-3-8B-Instruct"})  # r 8, q/k/v/o
    with pytest.raises(ConfigError) as exc:
        check_adapter(cfg, tmp_path, "adapter", warnings.append)
    text = str(exc.value)
    assert "2 problems in the training config" in text
    assert "the adapter has rank 16, lora_config.r is 8" in text and "set lora_config.r=16" in text
    assert "the adapter targets ['q_proj', 'v_proj'], lora_config.target_modules is ['k_proj', 'o_proj', 'q_proj', " \
           "'v_proj']" in text


def test_a_config_that_is_not_utf8_is_a_located_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model_id: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*is not UTF-8 text \(byte 13\)"):
        load_config(path)
