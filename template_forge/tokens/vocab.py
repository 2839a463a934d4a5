"""What the encoder needs to know about a tokenizer, computed once: its special tokens, the
byte length of every token, and the fastest exact engine for it.

Engines (``engine="auto"`` picks):

* ``tiktoken``: byte-level BPE vocabularies whose pre-tokenizer is one regex split (Llama 3,
  GPT-4-style), encoded with ``tiktoken`` when the merges follow the ranks and an exactness
  probe agrees with the Hugging Face tokenizer on every probe text.
* ``hf``: the ``tokenizers`` library.

The analysis of a tokenizer file is cached on disk, keyed by its bytes
(:mod:`~template_forge.tokens.vocab_cache`): a warm load reads it back in a few tens of
milliseconds and, for the tiktoken engine, never loads the Hugging Face tokenizer.

Token spans come from a per-id byte-length table (:attr:`Vocab.byte_len`); where the table
cannot reproduce the text (a normalizer that rewrites it, a prefix space the text lacks),
``lengths_exact`` is false or the encoder's per-conversation check fails, and offsets come
from the tokenizer itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from array import array
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from template_forge.errors import DataError
from template_forge.tokens import vocab_cache

ENGINES = ("auto", "hf", "tiktoken")
#: A private-use string added to the plain tokenizer so that a piece can be encoded as if it
#: followed a special token (SentencePiece-style pre-tokenizers treat offset 0 differently).
SENTINEL = "\ue000tforge\ue001"


def load_tokenizer(tokenizer: Any):
    """A ``tokenizers.Tokenizer`` from a folder or ``tokenizer.json`` path, a
    ``tokenizers.Tokenizer`` or a transformers fast tokenizer."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise DataError(
                f"{path}: no tokenizer.json found. Pass a folder written by `save_pretrained` "
                "(with tokenizer.json) or the tokenizer.json file itself.")
        try:
            return Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"{file}: not a Hugging Face tokenizer.json ({exc}).") from exc
    raise TypeError(
        f"expected a tokenizer folder, a tokenizer.json path, a tokenizers.Tokenizer or a "
        f"transformers fast tokenizer; found {type(tokenizer).__name__}")


def _bytes_of_byte_level(token: str, decoder: dict[str, int]) -> bytes | None:
    try:
        return bytes(decoder[ch] for ch in token)
    except KeyError:
        return None


@functools.lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    # GPT-2's reversible byte ↔ printable-character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class EncodeError(DataError):
    """The tokenizer failed on a text: a lone surrogate in it, or a pre-tokenizer regex that
    gave up (both engines bound a regex search and panic past the bound: Oniguruma's
    retry-limit-in-match, 10,000,000 steps, in ``tokenizers``; fancy-regex's backtrack limit,
    1,000,000, in ``tiktoken``)."""


def _is_panic(exc: BaseException) -> bool:
    # pyo3 panics derive from BaseException, so `except Exception` lets them through.
    return type(exc).__name__ == "PanicException"


@contextlib.contextmanager
def engine_errors(what: str = "the text"):
    """Turn the engines' failures on a text into :class:`EncodeError` (a panic, a surrogate)."""
    try:
        yield
    except EncodeError:
        raise
    except BaseException as exc:
        if isinstance(exc, (UnicodeEncodeError, TypeError)):
            raise EncodeError(f"the tokenizer cannot encode {what}: it holds a lone UTF-16 surrogate or other "
                              f"non-text ({type(exc).__name__}: {str(exc)[:120]}). Fix the text.") from None
        # tiktoken's numpy path reports the limit as a ValueError, its other paths panic.
        if not (_is_panic(exc) or isinstance(exc, ValueError) and "Regex error" in str(exc)):
            raise
        raise EncodeError(f"the tokenizer failed on {what}: {str(exc)[:160]}. Its pre-tokenizer regex "
                          "backtracks too much on it (nested quantifiers such as `(a+)+`); fix the pattern in "
                          "tokenizer.json, or drop the line.") from None


class Vocab:
    """What :class:`Encoder` needs to know about one tokenizer, computed once."""

    def __init__(self, tokenizer: Any, *, engine: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.source = tokenizer
        self._tok = self._config = self._plain = None
        key = vocab_cache.source_key(tokenizer, engine)
        analysis = vocab_cache.load_usable(key) if key else None
        if analysis is None:
            self._tok = _load_plain_specials(tokenizer)
            analysis = self._analyse(engine)
            if key and vocab_cache.source_key(tokenizer, engine) == key:  # not if the file changed meanwhile
                vocab_cache.store(key, analysis)
        #: sha256 of the tokenizer's canonical JSON: what a manifest records to detect a stale cache.
        self.sha256 = analysis.sha256
        #: Tokens, added ones included (``get_vocab_size(with_added_tokens=True)``).
        self.vocab_size = analysis.vocab_size
        self.control: dict[str, int] = analysis.control
        names = sorted(self.control, key=len, reverse=True)
        self.control_re = re.compile(_trie_pattern(names)) if names else None
        self.control_firsts = "".join(sorted({n[0] for n in names}))
        self._added = set(analysis.added)
        self._byte_level = analysis.byte_level
        self.byte_len, self.lengths_exact = analysis.byte_len, analysis.lengths_exact
        self.engine = analysis.engine
        self.tiktoken = analysis.encoding

    @property
    def tok(self):
        """The ``tokenizers.Tokenizer`` (loaded on first use when the analysis came from the cache)."""
        if self._tok is None:
            self._tok = _load_plain_specials(self.source)
        return self._tok

    @property
    def config(self) -> dict:
        """The tokenizer's JSON, parsed (on first use)."""
        if self._config is None:
            self._config = json.loads(self.tok.to_str())
        return self._config

    def _analyse(self, engine: str) -> vocab_cache.Analysis:
        """Everything the encoder needs from the tokenizer, computed from it (the slow path)."""
        serialized = self.tok.to_str()
        config = self._config = json.loads(serialized)
        added = config.get("added_tokens") or []
        self.control = {t["content"]: t["id"] for t in added if t["content"] and not t["content"].isspace()}
        odd = [t["content"] for t in added if t["content"] in self.control
               and (t.get("lstrip") or t.get("rstrip") or t.get("single_word"))]
        if odd:
            raise DataError(
                f"added tokens with lstrip/rstrip/single_word are not supported: {', '.join(odd[:5])}. "
                "Those flags make a special token swallow neighbouring whitespace; clear them in tokenizer.json.")
        self._stress()
        byte_len, exact = self._byte_lengths(config)
        analysis = vocab_cache.Analysis(
            hashlib.sha256(serialized.encode()).hexdigest(), self.tok.get_vocab_size(with_added_tokens=True),
            self.control, sorted(self._added), byte_len, exact, self._byte_level, "hf")
        if engine in ("auto", "tiktoken"):
            enc, why = self._tiktoken(config)
            if enc is not None:
                analysis.engine, analysis.encoding = "tiktoken", enc
                analysis.pattern, analysis.ranks, analysis.specials = self._tiktoken_parts
            elif engine == "tiktoken":
                raise DataError(f"the tiktoken engine cannot encode this tokenizer exactly: {why}")
        return analysis

    @property
    def path(self) -> str | None:
        """The absolute path the tokenizer was read from (None for a tokenizer object)."""
        return os.path.abspath(self.source) if isinstance(self.source, (str, os.PathLike)) else None

    # Byte length of every token's text, and whether summing them reproduces the text.
    def _byte_lengths(self, config: dict) -> tuple[np.ndarray, bool]:
        size = self.tok.get_vocab_size(with_added_tokens=True)
        vocab = self.tok.get_vocab(with_added_tokens=True)
        lengths = np.zeros(max(size, max(vocab.values(), default=-1) + 1), dtype=np.int64)
        model = config.get("model") or {}
        pre = json.dumps(config.get("pre_tokenizer"))
        norm = config.get("normalizer")
        byte_level = '"ByteLevel"' in pre and '"add_prefix_space": true' not in pre and model.get("type") == "BPE"
        self._byte_level = byte_level
        metaspace = '"Metaspace"' in pre and model.get("type") == "BPE"
        exact = norm is None if byte_level else (
            metaspace and _only_space_escape(norm) and '"prepend_scheme": "first"' in pre)
        added = self._added = {t["content"] for t in config.get("added_tokens") or []}
        self._model_bytes: dict[str, bytes] = {}  # model pieces → bytes, kept for the tiktoken ranks
        for token, i in vocab.items():
            raw = token.encode("utf-8") if token in added else self._piece_bytes(token)
            if raw is None:  # a byte-level piece outside the byte table: lengths cannot be trusted
                exact = False
                raw = token.encode("utf-8")
            elif token not in added:
                self._model_bytes[token] = raw
            lengths[i] = len(raw)
        return lengths, bool(exact)

    def _piece_bytes(self, piece: str) -> bytes | None:
        if self._byte_level:
            return _bytes_of_byte_level(piece, _byte_level_decoder())
        m = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode("utf-8")

    def _stress(self) -> None:
        """Refuse, at load time, a tokenizer whose pre-tokenizer regex gives up on long runs of
        one character class (catastrophic backtracking), rather than fail on every long line."""
        try:
            with engine_errors("a probe text of long character runs"):
                self.tok.encode_batch(_STRESS, add_special_tokens=False)
        except EncodeError as exc:
            raise DataError(f"this tokenizer cannot be used: {exc}") from None

    def _tiktoken(self, config: dict):
        try:
            import tiktoken
        except ImportError:
            return None, "tiktoken is not installed"
        model = config.get("model") or {}
        pre = config.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
        if (model.get("type") != "BPE" or model.get("byte_fallback") or config.get("normalizer") is not None
                or not steps or len(steps) != 2):
            return None, "not a byte-level BPE with a single regex split"
        if any(t["content"] not in self.control for t in config.get("added_tokens") or []):
            return None, "it has whitespace added tokens, which tiktoken cannot match"
        split, byte_level = steps
        pattern = (split.get("pattern") or {}).get("Regex")
        if (split.get("type") != "Split" or pattern is None or split.get("behavior") != "Isolated"
                or split.get("invert") or byte_level.get("type") != "ByteLevel"
                or byte_level.get("add_prefix_space") or byte_level.get("use_regex")):
            return None, "the pre-tokenizer is not Split(regex) + ByteLevel"
        ranks: dict[bytes, int] = {}
        for token, i in model["vocab"].items():
            raw = self._model_bytes.get(token)
            if raw is None:
                return None, f"token {token!r} is not byte-level"
            ranks[raw] = i
        merges = model.get("merges") or []
        previous = -1
        for merge in merges:  # tiktoken merges by rank: the merge order must follow the ranks
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            rank = model["vocab"].get(left + right)
            if rank is None or rank < previous:
                return None, "the merges are not ordered by the rank of their result"
            previous = rank
        specials = {t: i for t, i in self.control.items() if t.encode() not in ranks}
        try:
            enc = tiktoken.Encoding(name="tforge", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
        except Exception as exc:  # a regex tiktoken's engine does not take
            return None, f"tiktoken rejects the vocabulary ({exc})"
        self._tiktoken_parts = (pattern, ranks, specials)
        probe = _PROBE + list(self.control)
        want = [e.ids for e in self.tok.encode_batch(probe, add_special_tokens=False)]
        try:
            with engine_errors():
                got = [enc.encode(t, allowed_special="all", disallowed_special=()) for t in probe + _STRESS]
        except EncodeError as exc:
            return None, str(exc)
        want += [e.ids for e in self.tok.encode_batch(_STRESS, add_special_tokens=False)]
        if want != got:
            return None, "tiktoken and the tokenizer disagree on the probe texts"
        return enc, ""

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (for display; partial UTF-8 sequences stay partial)."""
        piece = self.tok.id_to_token(int(token_id))
        if piece is None:
            return b""
        raw = None if piece in self._added else self._piece_bytes(piece)
        return piece.encode("utf-8") if raw is None else raw

    def plain_tokenizer(self):
        """A copy of the tokenizer that matches no control token, plus a sentinel added token
        that lets a piece be encoded as if it followed a control token."""
        if self._plain is None:
            from tokenizers import AddedToken, Tokenizer

            conf = dict(self.config)
            # Control tokens become special (and encode_special_tokens turns them into text);
            # whitespace added tokens stay matched, as in a whole-string tokenization.
            conf["added_tokens"] = [dict(t, special=t["content"] in self.control) for t in conf.get("added_tokens") or []]
            plain = Tokenizer.from_str(json.dumps(conf))
            plain.add_tokens([AddedToken(SENTINEL, special=False, normalized=False)])
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain

    def plain(self, pieces: Sequence[tuple[str, bool]]) -> list[list[int]]:
        """Plain-text ids of each ``(text, first)`` piece: no added token is matched, and the
        piece is encoded as if it followed a control token (``first=False``) or started the
        text (``first=True``)."""
        with engine_errors():
            if self.tiktoken is not None:
                return [self.tiktoken.encode_ordinary(p) for p, _ in pieces]
            plain = self.plain_tokenizer()
            texts = [p if first else SENTINEL + p for p, first in pieces]
            encoded = plain.encode_batch_fast(texts, add_special_tokens=False)
        return [enc.ids if first else enc.ids[1:] for (_, first), enc in zip(pieces, encoded)]

    def plain_offsets(self, piece: str, first: bool) -> list[tuple[int, int]]:
        """Character offsets, within ``piece``, of the tokens :meth:`plain` gives it."""
        with engine_errors():
            if first:
                return self.plain_tokenizer().encode(piece, add_special_tokens=False).offsets
            enc = self.plain_tokenizer().encode(SENTINEL + piece, add_special_tokens=False)
        skip = len(SENTINEL)
        return [(s - skip, e - skip) for s, e in enc.offsets[1:]]

    def encode_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Whole-string tokenization (special-token strings parsed everywhere), as int32 arrays."""
        with engine_errors():
            if self.tiktoken is not None:
                enc = self.tiktoken
                return [enc.encode_to_numpy(t, allowed_special="all", disallowed_special=()).view(np.int32)
                        for t in texts]
            encoded = self.tok.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.frombuffer(array("i", e.ids), dtype=np.int32) for e in encoded]


_VOCABS: dict[tuple, Vocab] = {}


def cached_vocab(tokenizer: Any, *, engine: str = "auto") -> Vocab:
    """A :class:`Vocab`, reused for the same tokenizer file (path + size + mtime) or object."""
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            st = file.stat()
        except OSError:
            return Vocab(tokenizer, engine=engine)  # let Vocab raise the located error
        key: tuple = ("file", str(file.resolve()), st.st_size, st.st_mtime_ns, engine)
    else:
        key = ("object", id(tokenizer), engine)
    vocab = _VOCABS.get(key)
    if vocab is None or (key[0] == "object" and vocab.source is not tokenizer):
        vocab = Vocab(tokenizer, engine=engine)
        if len(_VOCABS) >= 8:
            _VOCABS.pop(next(iter(_VOCABS)))
        _VOCABS[key] = vocab
    return vocab


def _trie_pattern(words: Sequence[str]) -> str:
    """A regex matching any of ``words``, longest first at each position, built as a trie so
    that hundreds of special tokens cost one pass rather than one try each.

    Examples:
        >>> p = re.compile(_trie_pattern(["<s>", "</s>", "[INST]", "[/INST]", "<s"]))
        >>> [m.group() for m in p.finditer("<s>[INST] a </s> <s [/INST]")]
        ['<s>', '[INST]', '</s>', '<s', '[/INST]']
    """
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return build(trie)


def _only_space_escape(norm: dict | None) -> bool:
    if norm is None:
        return True
    steps = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
    return all(s.get("type") == "Replace" and (s.get("pattern") or {}).get("String") == " "
               and s.get("content") == "▁" for s in steps)


def _load_plain_specials(source: Any):
    """:func:`load_tokenizer`, on a copy with ``encode_special_tokens`` off if it was on."""
    from tokenizers import Tokenizer

    tok = load_tokenizer(source)
    if tok.encode_special_tokens:
        tok = Tokenizer.from_str(tok.to_str())
        tok.encode_special_tokens = False
    return tok


#: Long runs of one character class: where a backtracking pre-tokenizer regex blows up.
_STRESS = [c * 4000 + end for c, end in (("a", "!"), (" ", "a"), ("1", "a"), ("'", "s"), ("\n", "a"),
                                         ("é", "!"), ("!", "a"), ("\t", " "))] + ["a1 " * 1500 + "!"]

_PROBE = [
    "Hello, world!", " leading space", "trailing  ", "  two  spaces\n\n\nnewlines\t\ttabs",
    "1234567 numbers 3.14159", "I'm we'll they'd YOU'RE", "emoji 🙂🙃 and ÿ é ß 日本語のテキスト",
    "code:\n    def f(x):\n        return x ** 2\n", "\r\n\r\nwindows", "ab" * 50, "a" * 300,
    "mixed\u00a0nbsp\u2003em-space", "'s's's 's", "<|not_special|> <s> [INST]", "\n \n  \n",
]
