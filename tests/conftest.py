"""Shared fixtures: the conformance corpus location and the --update-goldens switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CONFORMANCE = ROOT.parent / "shared" / "conformance"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="Rewrite golden files under fixtures/ from the current code.")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not (CONFORMANCE / "manifest.json").is_file():
        pytest.skip(f"conformance corpus not found at {CONFORMANCE} (it lives beside the checkout as ../shared/conformance)")
    return CONFORMANCE


def official(conformance_dir: Path, template_name: str) -> tuple[str, dict]:
    """The official template text and its manifest entry (bos/eos to render with)."""
    manifest = json.loads((conformance_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["name"] == template_name)
    return (conformance_dir / "templates" / f"{template_name}.jinja").read_text(), entry


def make_tokenizer(folder):
    """A tiny byte-level BPE fast tokenizer, trained here, saved in save_pretrained layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Be brief. Hi there, Hello! system user assistant"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    fast.save_pretrained(folder)
    return fast
