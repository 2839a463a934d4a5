"""Shared fixtures: the conformance corpus location and the --update-goldens switch."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CONFORMANCE = ROOT.parent / "shared" / "conformance"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="Rewrite golden files under fixtures/ from the current code.")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Every test (and every subprocess it starts) caches under a temporary folder, never in
    the real ``~/.cache/tforge``: the vocabulary cache and the trainer's downloads share it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("tforge-cache")))
        mp.delenv("TFORGE_NO_CACHE", raising=False)
        yield


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


def write_conversations(path, n: int, *, words: list[str], user_words: int = 40, assistant_words: int = 90,
                        seed: int = 0):
    """``n`` random chat lines (1 to 3 user/assistant turns of up to so many ``words``) in ``path``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            turns = []
            for _ in range(int(rng.integers(1, 4))):
                turns += [{"role": "user", "content": " ".join(rng.choice(words, int(rng.integers(1, user_words))))},
                          {"role": "assistant",
                           "content": " ".join(rng.choice(words, int(rng.integers(1, assistant_words))))}]
            fh.write(json.dumps({"messages": turns}) + "\n")
    return path


# ---------------------------------------------------------------- real tokenizers, built offline
def _vendor_file(package: str, relative: str) -> Path:
    mod = pytest.importorskip(package)
    path = Path(mod.__file__).parent / relative
    if not path.is_file():
        pytest.skip(f"{package} does not ship {relative}")
    return path


REAL_TOKENIZERS = {
    # name: (package, file inside it, converter)
    "llama3": ("llama_models", "llama3/tokenizer.model", "tiktoken"),
    "llama4": ("llama_models", "llama4/tokenizer.model", "tiktoken-llama4"),
    "mistral-v1": ("mistral_common", "data/tokenizer.model.v1", "sentencepiece"),
    "mistral-v3": ("mistral_common", "data/mistral_instruct_tokenizer_240323.model.v3", "sentencepiece"),
    "mistral-v7": ("mistral_common", "data/mistral_instruct_tokenizer_241114.model.v7", "sentencepiece"),
    "tekken": ("mistral_common", "data/tekken_240911.json", "tekken"),  # Pixtral's; read as v7/v11 for Small 3.x
    "tekken-nemo": ("mistral_common", "data/tekken_240718.json", "tekken"),  # Mistral Nemo's own (v3)
}


def _llama4_tiktoken() -> dict:
    """Llama 4's specials (in id order, reserved ones included), regex and eos, from llama_models."""
    from llama_models.llama4 import tokenizer as t

    specials = t.BASIC_SPECIAL_TOKENS + t.LLAMA4_SPECIAL_TOKENS
    specials += [f"<|reserved_special_token_{i}|>" for i in range(t.Tokenizer.num_reserved_special_tokens - len(specials))]
    return {"special_tokens": specials, "pattern": t.Tokenizer.O200K_PATTERN, "eos_token": "<|eot|>"}


@pytest.fixture(scope="session")
def real_tokenizer(request):
    """``real_tokenizer(name)`` → folder of a Hugging Face fast tokenizer converted from the
    vendor's own file, cached under .pytest_cache between runs (keyed by the file's hash)."""
    import hashlib

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in built:
            return built[name]
        package, relative, kind = REAL_TOKENIZERS[name]
        source = _vendor_file(package, relative)
        key = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        folder = Path(request.config.cache.mkdir("tforge-tokenizers")) / f"{name}-{key}"
        if not (folder / "tokenizer.json").is_file():
            from template_forge.tokens import convert

            if kind == "tiktoken-llama4":
                tok = convert.from_tiktoken(source, **_llama4_tiktoken())
            else:
                tok, _ = convert.from_vendor_file(source, kind=kind)
            tmp = folder.with_name(folder.name + ".tmp")
            convert.save(tok, tmp)
            tmp.replace(folder)
        built[name] = folder
        return folder

    return get


# ---------------------------------------------------------------- a frozen clock
@contextlib.contextmanager
def frozen_clock(now):
    """transformers' ``strftime_now`` reads ``now`` inside (it calls ``datetime.now()`` from its
    module's globals); give the renderer ``now=`` too."""
    import datetime as dt

    from transformers.utils import chat_template_utils

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # the signature of datetime.now
            return now

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chat_template_utils, "datetime", Frozen)
        yield


# ---------------------------------------------------------------- S3 on loopback (tests/s3server.py)
from s3server import s3_bucket, s3_server  # noqa: E402, F401  (registers the fixtures)
