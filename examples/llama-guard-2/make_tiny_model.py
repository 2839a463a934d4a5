"""Make a tiny, randomly initialised stand-in for Meta-Llama-3-8B, offline.

The folder it writes has the layout of a real base checkpoint saved with
``save_pretrained`` (``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``), so ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load it exactly as they would load your own weights.
What is real: the Llama 3 tokenizer (built from the ``tokenizer.model`` that the
``llama-models`` package ships, with template_forge's ``convert-tokenizer``) and the
token-level settings of Meta-Llama-3-8B's ``config.json`` (vocab_size 128256, rope_theta
500000, bos 128000, eos 128001, untied embeddings). What is not: every width and depth
(hidden 64, 2 layers), and the weights (random, ``torch.manual_seed(0)``).

Usage::

    python make_tiny_model.py work/tiny-llama3 [--tokenizer-dir work/llama3-tokenizer]

Running it again with the same settings does nothing (a marker file records them); the
folder appears whole or not at all (built next to it, then renamed into place).

Examples:
    >>> settings()["config"]["vocab_size"], settings()["config"]["rope_theta"]
    (128256, 500000.0)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import shutil
import sys
import tempfile
from pathlib import Path

#: Written last into the model folder; its content says which settings made the folder.
MARKER = "tforge-example-tiny-model.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

#: Meta-Llama-3-8B's own values for everything that touches tokens and positions; tiny dims.
LLAMA3_8B_TOKEN_SETTINGS = dict(vocab_size=128256, rope_theta=500000.0, bos_token_id=128000,
                                eos_token_id=128001, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                max_position_embeddings=8192, hidden_act="silu")
TINY_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
SEED = 0


class SetupError(Exception):
    """A problem the user can fix; printed as ``Error: …`` with exit status 1."""


def settings() -> dict:
    """Everything that determines the folder's content (compared with the marker)."""
    return {"config": {**LLAMA3_8B_TOKEN_SETTINGS, **TINY_DIMS}, "seed": SEED,
            "dtype": "float32", "tokenizer_source": "llama_models/llama3/tokenizer.model"}


def llama3_tokenizer_model() -> Path:
    """The tiktoken file that the ``llama-models`` package ships (no download)."""
    try:
        path = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    except ModuleNotFoundError:
        raise SetupError("the llama-models package is not installed; install it with "
                         "`pip install llama-models` (or template-forge[vendors])") from None
    if not path.is_file():
        raise SetupError(f"{path} not found: this llama-models version does not ship the "
                         "Llama 3 tokenizer.model")
    return Path(str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_tokenizer(tokenizer_dir: Path | None, staging: Path) -> Path:
    """A folder holding the converted Llama 3 tokenizer: reused from ``tokenizer_dir`` if there."""
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").is_file():
        check_llama3_tokenizer(tokenizer_dir / "tokenizer.json")
        print(f"tokenizer: reusing {tokenizer_dir}")
        return tokenizer_dir
    from template_forge.tokens import convert

    source = llama3_tokenizer_model()
    print(f"tokenizer: converting {source} (offline)")
    if tokenizer_dir is None:
        convert.save(convert.from_tiktoken(source), staging / "tokenizer")
        return staging / "tokenizer"
    tokenizer_dir.parent.mkdir(parents=True, exist_ok=True)
    # Built next to the cache folder and renamed into place: never a half-written cache.
    with tempfile.TemporaryDirectory(prefix=f".{tokenizer_dir.name}.", dir=tokenizer_dir.parent) as tmp:
        convert.save(convert.from_tiktoken(source), Path(tmp) / "tokenizer")
        publish(Path(tmp) / "tokenizer", tokenizer_dir)
    return tokenizer_dir


def check_llama3_tokenizer(path: Path) -> None:
    """Refuse a cached tokenizer that is not Llama 3's (its specials start at id 128000)."""
    added = {t["content"]: t["id"] for t in json.loads(path.read_text())["added_tokens"]}
    if added.get("<|begin_of_text|>") != 128000 or added.get("<|eot_id|>") != 128009:
        raise SetupError(f"{path} is not the Llama 3 tokenizer (<|begin_of_text|> is not id "
                         "128000); remove the folder or point --tokenizer-dir elsewhere")


def build_model(folder: Path) -> None:
    """Save the random tiny model (float32, safetensors) into ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(SEED)
    config = LlamaConfig(**settings()["config"])
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(folder), safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.1f}M parameters (embeddings and lm_head: "
          f"{2 * config.vocab_size * config.hidden_size / 1e6:.1f}M of them)")


def publish(built: Path, target: Path) -> None:
    """Move ``built`` to ``target`` in one rename, replacing a folder this script made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)


def is_up_to_date(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["settings"] == settings()
    except (OSError, ValueError, KeyError, TypeError):  # no marker, or one from an interrupted edit
        return False


def make(out_dir: Path, tokenizer_dir: Path | None = None) -> None:
    """Make ``out_dir`` unless it already holds a model made with the same settings."""
    if is_up_to_date(out_dir):
        print(f"{out_dir}: up to date (same settings), nothing to do")
        return
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise SetupError(f"{out_dir} exists and was not made by this script (no {MARKER}); "
                         "pick another folder or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        staging = Path(tmp)
        tok_dir = ensure_tokenizer(tokenizer_dir, staging)
        built = staging / "model"
        build_model(built)
        for name in TOKENIZER_FILES:
            if (tok_dir / name).is_file():
                shutil.copy2(tok_dir / name, built / name)
        record = {"settings": settings(),
                  "tokenizer_json_sha256": sha256(built / "tokenizer.json")}
        (built / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        publish(built, out_dir)
    print(f"wrote {out_dir}: " + ", ".join(sorted(p.name for p in out_dir.iterdir())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (save_pretrained layout)")
    parser.add_argument("--tokenizer-dir", type=Path,
                        help="cache for the converted Llama 3 tokenizer: reused if it holds "
                             "tokenizer.json, written there otherwise")
    args = parser.parse_args(argv)
    try:
        make(args.out_dir, args.tokenizer_dir)
    except SetupError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
