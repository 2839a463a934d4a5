"""Building blocks of the trainer tests: a tiny random Llama saved in save_pretrained layout
(with a tiny BPE tokenizer that has the Llama 3 control tokens), conversation files, and a
config. Nothing is downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from conftest import make_tokenizer

WORDS = "the a cat dog sat ran on under mat log big small red blue quickly slowly and then".split()


def make_model(folder: Path, *, seed: int = 0, layers: int = 2, vocab_size: int | None = None) -> Path:
    """A tiny LlamaForCausalLM with random weights + its tokenizer, in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    cfg = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def conversations(n: int, *, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    out = []
    for _ in range(n):
        messages = [{"role": "system", "content": text(2, 5)}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 2)):
            messages += [{"role": "user", "content": text(2, 10)}, {"role": "assistant", "content": text(2, 14)}]
        out.append({"messages": messages})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_run(root: Path, *, model: Path | None = None, n_train: int = 40, n_valid: int = 8, **overrides) -> Path:
    """A config file under ``root`` (a model is made at ``root/model`` unless given)."""
    model = model or make_model(root / "model")
    write_jsonl(root / "train.jsonl", conversations(n_train, seed=1))
    write_jsonl(root / "valid.jsonl", conversations(n_valid, seed=2))
    config = {
        "model_id": "tforge-tests/tiny-llama", "initial_base_model_ckpt_path": str(model),
        "train_path": "train.jsonl", "valid_path": "valid.jsonl", "prompt_format": "llama3",
        "context_length": 256, "num_epochs": 2, "train_batch_size_per_device": 2, "eval_batch_size_per_device": 4,
        "gradient_accumulation_steps": 2, "learning_rate": 5e-3, "num_warmup_steps": 1,
        "checkpoint_and_evaluation_frequency": {"unit": "steps", "frequency": 2}, "max_num_checkpoints": 2,
        "lora_config": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "gradient_checkpointing": False, "output_dir": "out", "seed": 0,
    }
    config.update(overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class Planted:
    """Unpickling this writes ``path``: the code a planted file (a checkpoint's, a weights folder's) would run: a test asserts ``path`` never appears."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def read_metrics(out: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]
