"""Build Hugging Face fast tokenizers offline from the files that vendors ship.

Three vocabulary formats cover the Llama 3 and Mistral families:

* ``tiktoken`` BPE files (Llama 3's and Llama 4's ``tokenizer.model``, shipped by
  ``llama-models``): :func:`from_tiktoken`. Ranks become ids, merges are derived from the
  ranks, the pre-tokenizer is the tiktoken regex, and the special tokens follow the base
  vocabulary (Llama 4's file, told apart by its size, gets Llama 4's specials and regex).
* SentencePiece models (Mistral's ``tokenizer.model.v1`` / ``.v3``, shipped by
  ``mistral-common``): :func:`from_sentencepiece`. Merges are ranked by piece *score*
  (transformers' generic converter ranks them by piece id, which tokenizes about one in
  five whitespace-heavy texts differently from SentencePiece), and ``legacy=False`` adds the
  dummy prefix only at the start of the text, as SentencePiece does, not after every
  special token.
* Tekken JSON files (Mistral Nemo / Small 3, shipped by ``mistral-common``): :func:`from_tekken`,
  a tiktoken-like BPE whose ids start after the special tokens.

All three return a ``transformers.PreTrainedTokenizerFast``; :func:`save` writes it in
``save_pretrained`` layout. Nothing here downloads anything. transformers, tokenizers,
tiktoken (for :func:`from_tiktoken`) and protobuf (for :func:`from_sentencepiece`) are
imported when called.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from template_forge.errors import DataError

#: Llama 3.1+ special tokens in id order after the 128000 base tokens (as ``llama-models``
#: defines them); 256 in all, the unnamed ones ``<|reserved_special_token_N|>``.
LLAMA3_NAMED_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    "<|image|>",
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_special_tokens(num_reserved: int = 256) -> list[str]:
    """The Llama 3 special-token list, in id order.

    Examples:
        >>> toks = llama3_special_tokens()
        >>> len(toks), toks.index("<|eot_id|>"), toks[-1]
        (256, 9, '<|reserved_special_token_245|>')
    """
    named = list(LLAMA3_NAMED_SPECIALS)
    return named + [f"<|reserved_special_token_{2 + i}|>" for i in range(num_reserved - len(named))]


#: Llama 4's regex (``llama_models.llama4.tokenizer.Tokenizer.O200K_PATTERN``).
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: the number of base tokens of Llama 4's tiktoken file (Llama 3's has 128000)
LLAMA4_BASE = 200_000


def llama4_special_tokens(num_reserved: int = 2048) -> list[str]:
    """The Llama 4 special-token list, in id order after the 200000 base tokens, as
    ``llama-models`` defines it: basic, text post-train, vision, reasoning, then unnamed.

    Examples:
        >>> toks = llama4_special_tokens()
        >>> len(toks), toks.index("<|header_start|>"), toks.index("<|eot|>"), toks.index("<|python_start|>")
        (2048, 5, 8, 16)
    """
    def reserved(name, count, start):
        return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]

    text = ["<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>", "<|step|>",
            *reserved("text_post_train", 6, 0), "<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>",
            *reserved("text_post_train", 61, 8)]
    vision = ["<|image_start|>", "<|image_end|>", *reserved("vision", 2, 0), "<|tile_x_separator|>",
              "<|tile_y_separator|>", *reserved("vision", 4, 2), "<|image|>", *reserved("vision", 1, 6), "<|patch|>",
              *reserved("vision", 1041, 7)]
    reasoning = [*reserved("reasoning", 8, 0), "<|reasoning_thinking_start|>", "<|reasoning_thinking_end|>"]
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
             *text, *vision, *reasoning]
    return named + [f"<|reserved_special_token_{i}|>" for i in range(num_reserved - len(named))]


def _base_size(model_file: str | Path) -> int:
    with open(model_file, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def from_tiktoken(model_file: str | Path, *, special_tokens: Sequence[str] | None = None,
                  pattern: str | None = None, bos_token: str = "<|begin_of_text|>",
                  eos_token: str | None = None):
    """A fast tokenizer from a tiktoken BPE file. By default its specials, regex and
    end-of-turn are Llama 3's, or Llama 4's for a file of Llama 4's size (200000 tokens)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    llama4 = special_tokens is None and _base_size(model_file) == LLAMA4_BASE
    if special_tokens is not None:
        specials = list(special_tokens)
    else:
        specials = llama4_special_tokens() if llama4 else llama3_special_tokens()
    pattern = pattern if pattern is not None else LLAMA4_PATTERN if llama4 else LLAMA3_PATTERN
    eos_token = eos_token if eos_token is not None else "<|eot|>" if llama4 else "<|eot_id|>"
    converter = TikTokenConverter(vocab_file=str(model_file), pattern=pattern)
    tok = converter.converted()
    base = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    got = [tok.token_to_id(t) for t in specials]
    if got != list(range(base, base + len(specials))):
        raise DataError(f"{model_file}: the special tokens did not land right after its {base} base tokens, so it "
                        "is not a Llama 3 or Llama 4 tiktoken file. Pass the special tokens its model uses (special_tokens=...).")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos_token, eos_token=eos_token,
                                   clean_up_tokenization_spaces=False)


def from_sentencepiece(model_file: str | Path, *, legacy: bool = False):
    """A fast tokenizer from a SentencePiece BPE model, encoding like SentencePiece itself.

    Control pieces (``<s>``, ``</s>``, ``[INST]``, …) become special added tokens, so they
    are recognised where a template writes them.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    model_pb2 = import_protobuf()
    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    if proto.trainer_spec.model_type != 2:
        raise DataError(f"{model_file}: a SentencePiece model of type {proto.trainer_spec.model_type}; only BPE "
                        "models (type 2) can be converted. Convert it with its vendor's own tools.")
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=legacy)
    # type 2 = unknown, 3 = control: both are special tokens, never produced from text.
    control = [(i, p.piece) for i, p in enumerate(proto.pieces) if p.type in (2, 3)]
    tok.add_special_tokens([AddedToken(piece, normalized=False, special=True) for _, piece in control])
    trainer = proto.trainer_spec
    names = {i: p.piece for i, p in enumerate(proto.pieces)}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=names.get(trainer.bos_id), eos_token=names.get(trainer.eos_id),
        unk_token=names.get(trainer.unk_id), clean_up_tokenization_spaces=False, legacy=legacy)


#: The special tokens of a Tekken file that lists none (versions up to v7), in rank order, as
#: mistral-common's ``Tekkenizer.DEPRECATED_SPECIAL_TOKENS`` defines them; the other ranks up
#: to ``default_num_special_tokens`` are ``<SPECIAL_{rank}>``.
TEKKEN_DEFAULT_SPECIALS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
)


def from_tekken(model_file: str | Path):
    """A fast tokenizer from a Tekken JSON file (Mistral Nemo, Pixtral, Small 3; shipped by
    ``mistral-common``): a tiktoken-like byte BPE whose ranks follow the special tokens.

    Ids ``0 .. num_special - 1`` are the special tokens (the file's own list, else
    :data:`TEKKEN_DEFAULT_SPECIALS` and ``<SPECIAL_n>``), then the first
    ``default_vocab_size - num_special`` vocabulary entries, rank ``r`` at id ``num_special + r``
    (what ``Tekkenizer`` keeps). Merges come from the ranks, as for tiktoken files, and the
    pre-tokenizer is the file's regex. Tekken adds no dummy prefix.
    """
    import base64
    import json

    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers import Regex as TokRegex
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    data = json.loads(Path(model_file).read_text(encoding="utf-8"))
    config = data["config"]
    n_special = config["default_num_special_tokens"]
    listed = data.get("special_tokens")
    if listed is not None:
        named = {t["rank"]: t["token_str"] for t in listed}
    else:
        named = dict(enumerate(TEKKEN_DEFAULT_SPECIALS))
    specials = [named.get(r, f"<SPECIAL_{r}>") for r in range(n_special)]
    kept = data["vocab"][: config["default_vocab_size"] - n_special]
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in kept}
    converter = TikTokenConverter(pattern=config["pattern"])
    converter.load_tiktoken_bpe = lambda _path: ranks  # the ranks are in memory, not in a tiktoken file
    vocab, merges = converter.extract_vocab_merges_from_model(None)
    clash = sorted(set(vocab) & set(specials))
    if clash:
        raise DataError(f"{model_file}: the vocabulary holds the text of special token {clash[0]!r}; this "
                        "converter cannot give both an id. Convert it with its vendor's own tools.")
    ids = {**{t: r for r, t in enumerate(specials)}, **{t: r + n_special for t, r in vocab.items()}}
    tok = Tokenizer(BPE(ids, merges, fuse_unk=False))
    tok.model.ignore_merges = True
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(TokRegex(config["pattern"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[1], eos_token=specials[2],
                                   unk_token=specials[0], clean_up_tokenization_spaces=False)


def detect_kind(model_file: str | Path) -> str:
    """``tekken`` for a Tekken JSON file, ``tiktoken`` for a tiktoken BPE file (lines of
    ``base64 rank``), else ``sentencepiece`` (a binary protobuf)."""
    with open(model_file, "rb") as fh:
        head = fh.read(64)
    if head.lstrip()[:1] == b"{":
        return "tekken"
    return "tiktoken" if head[:1].isalnum() and b" " in head.split(b"\n")[0] else "sentencepiece"


def from_vendor_file(model_file: str | Path, *, kind: str = "auto"):
    """A fast tokenizer from a vendor's vocabulary file; ``kind`` ``auto`` tells the
    formats apart by their first bytes. Returns ``(tokenizer, kind)``."""
    kind = detect_kind(model_file) if kind == "auto" else kind
    build = {"tiktoken": from_tiktoken, "tekken": from_tekken}.get(kind, from_sentencepiece)
    return build(model_file), kind


def save(tokenizer, folder: str | Path) -> Path:
    """Write ``tokenizer`` in ``save_pretrained`` layout (``tokenizer.json`` + config)."""
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    return folder


def write_folder(tokenizer, folder: str | Path, *, overwrite: bool = False) -> Path:
    """:func:`save` into a new folder that appears whole or not at all, one writer at a time.

    An existing non-empty ``folder`` is refused unless ``overwrite``; then it is replaced whole.
    """
    from template_forge.io import occupied, replace_dir, temp_dir
    from template_forge.locks import output_lock

    folder = Path(folder)
    with output_lock(folder):
        if occupied(folder) and not overwrite:
            raise DataError(f"{folder} already exists. Choose another output folder or pass --overwrite.")
        tmp = temp_dir(folder)
        try:
            save(tokenizer, tmp)
            os.chmod(tmp, 0o755)
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder

