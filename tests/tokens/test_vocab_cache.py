"""The on-disk vocabulary cache: same encodings cold and warm, and a bad entry is a miss."""

from __future__ import annotations

import os

import numpy as np
import pytest

from template_forge.format.spec import load_builtin
from template_forge.tokens import vocab_cache
from template_forge.tokens.encoder import Encoder
from template_forge.tokens.vocab import Vocab

from conftest import make_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "日本語 🙂 é\n\n  spaces\t"},
     {"role": "assistant", "content": "ok " * 300}, {"role": "user", "content": "<|eot_id|> [INST] </s>"},
     {"role": "assistant", "content": "a special-looking <|start_header_id|> string, kept as text"}],
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache for one test, and a clean slate for the once-per-process warnings."""
    monkeypatch.setenv("TFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(vocab_cache, "_warned", set())
    return tmp_path / "cache" / "vocab"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    make_tokenizer(folder)
    return folder


def _encodings(vocab: Vocab, fmt: str) -> list[tuple[list, list]]:
    out = []
    for parse_special in (False, True):
        encoder = Encoder(load_builtin(fmt), vocab, parse_special=parse_special)
        out += [(e.input_ids.tolist(), e.loss_mask.tolist()) for e in encoder.encode_batch(CONVERSATIONS, workers=1)]
    return out


@pytest.mark.parametrize("name, fmt, engine, expected", [
    ("llama3", "llama3", "auto", "tiktoken"), ("llama3", "llama3", "hf", "hf"),
    ("mistral-v3", "mistral-v3-common", "auto", "hf"),
])
def test_warm_vocab_encodes_exactly_like_a_cold_one(real_tokenizer, cache, name, fmt, engine, expected):
    folder = real_tokenizer(name)
    cold = Vocab(folder, engine=engine)
    assert cold._tok is not None and len(list(cache.glob("*.npz"))) == 1
    warm = Vocab(folder, engine=engine)
    assert warm._tok is None, "the second load should come from the cache, without loading tokenizers"
    assert (warm.engine, warm.sha256, warm.vocab_size, warm.lengths_exact, warm.control) == (
        expected, cold.sha256, cold.vocab_size, cold.lengths_exact, cold.control)
    assert np.array_equal(warm.byte_len, cold.byte_len)
    assert _encodings(warm, fmt) == _encodings(cold, fmt)
    assert warm._tok is None or expected == "hf"  # the tiktoken engine never needed the HF tokenizer
    if expected == "tiktoken":  # ranks that disagree with the byte lengths: a tampered entry, a miss
        (entry,) = cache.glob("*.npz")
        analysis = vocab_cache.load(entry.stem)
        analysis.byte_len = analysis.byte_len.copy()
        analysis.byte_len[300] += 1
        entry.write_bytes(vocab_cache._encode(entry.stem, analysis))
        assert Vocab(folder, engine=engine)._tok is not None
        analysis = vocab_cache.load(entry.stem)  # a split regex tiktoken refuses: also a miss
        analysis.pattern = "(unclosed"
        entry.write_bytes(vocab_cache._encode(entry.stem, analysis))
        assert Vocab(folder, engine=engine)._tok is not None


def _entry(cache) -> os.PathLike:
    (entry,) = cache.glob("*.npz")
    return entry


def _damage_truncated(entry, tmp_path):
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _damage_garbage(entry, tmp_path):
    entry.write_bytes(b"PK\x03\x04 not really a zip")


def _damage_pickle(entry, tmp_path):
    with open(entry, "wb") as fh:  # an object array: loading it would need a pickle
        np.savez(fh, **{name: np.array([{"x": 1}], dtype=object) for name in vocab_cache._ARRAYS})


def _damage_foreign(entry, tmp_path):  # a valid entry, but for another key
    analysis = vocab_cache.load(entry.stem)
    entry.write_bytes(vocab_cache._encode("0" * 40, analysis))


def _damage_version(entry, tmp_path):
    analysis = vocab_cache.load(entry.stem)
    old = vocab_cache.FORMAT
    try:
        vocab_cache.FORMAT = old + 1
        data = vocab_cache._encode(entry.stem, analysis)
    finally:
        vocab_cache.FORMAT = old
    entry.write_bytes(data)


def _damage_ids(entry, tmp_path):  # a control token pointing past the vocabulary
    analysis = vocab_cache.load(entry.stem)
    analysis.control = dict(analysis.control, **{"<|eot_id|>": 10**6})
    entry.write_bytes(vocab_cache._encode(entry.stem, analysis))


def _damage_symlink(entry, tmp_path):  # a link out of the cache, to a valid entry
    outside = tmp_path / "outside.npz"
    outside.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(outside)


def _damage_fifo(entry, tmp_path):  # would block a plain open() for ever
    entry.unlink()
    os.mkfifo(entry)


@pytest.mark.parametrize("damage", [_damage_truncated, _damage_garbage, _damage_pickle, _damage_foreign,
                                    _damage_version, _damage_ids, _damage_symlink, _damage_fifo], ids=lambda f: f.__name__[8:])
def test_a_bad_entry_is_rebuilt_with_at_most_one_warning(tiny, cache, tmp_path, capsys, damage):
    want = _encodings(Vocab(tiny), "llama3")
    entry = _entry(cache)
    outside_bytes = entry.read_bytes()
    damage(entry, tmp_path)
    capsys.readouterr()
    vocab = Vocab(tiny)
    assert vocab._tok is not None, "a damaged entry must not be used"
    assert _encodings(vocab, "llama3") == want
    err = capsys.readouterr().err
    assert len(err.splitlines()) <= 1 and "Traceback" not in err
    assert not entry.is_symlink() and vocab_cache.load(entry.stem) is not None  # rewritten whole, link replaced
    assert Vocab(tiny)._tok is None  # and used again
    if damage is _damage_symlink:
        assert (tmp_path / "outside.npz").read_bytes() == outside_bytes  # the link's target was not written


def test_an_unwritable_cache_costs_one_warning(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vocab_cache, "_warned", set())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TFORGE_CACHE_DIR", str(blocker))
    want = _encodings(Vocab(tiny), "llama3")
    again = Vocab(tiny)
    assert again._tok is not None and _encodings(again, "llama3") == want
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot be" in err and "Traceback" not in err


def test_a_symlinked_cache_folder_is_not_used(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vocab_cache, "_warned", set())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vocab").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("TFORGE_CACHE_DIR", str(tmp_path / "cache"))
    Vocab(tiny)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_no_cache_switch(tiny, cache, monkeypatch):
    monkeypatch.setenv("TFORGE_NO_CACHE", "1")
    Vocab(tiny)
    assert Vocab(tiny)._tok is not None and not cache.exists()


def test_the_key_follows_the_file_bytes_and_the_engine(tiny, cache, tmp_path):
    Vocab(tiny)
    Vocab(tiny, engine="hf")
    assert len(list(cache.glob("*.npz"))) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "tokenizer.json").write_text((tiny / "tokenizer.json").read_text() + "\n")  # same tokenizer, new bytes
    assert Vocab(other)._tok is not None and len(list(cache.glob("*.npz"))) == 3
