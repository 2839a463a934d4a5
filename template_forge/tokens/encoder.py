"""Conversations → ``input_ids`` + token-level ``loss_mask``, exact and fast.

The rendered text comes from :func:`template_forge.format.render.render` (no Jinja at run time), is
tokenized once, and tokens are aligned to the renderer's segments by their byte spans. The
result is, by construction and by test:

* ``input_ids`` == ``tokenizer(text, add_special_tokens=False)`` for the rendered text,
  whenever message contents hold no special-token strings (the spec's ``bos`` is the only
  BOS: nothing is added) and the spec does not ``tokenize_apart`` (then each piece between
  the renderer's ``breaks`` is tokenized on its own, as Meta's ``ChatFormat`` does).
* ``loss_mask`` == transformers' ``assistant_masks`` from ``apply_chat_template(...,
  return_assistant_tokens_mask=True)`` with the compiled training template: a token is
  trained when its span overlaps a trained span (assistant content + the assistant
  suffix). A token that straddles a boundary (a BPE merge across it, a SentencePiece
  ``▁`` carried over) is therefore trained if *any* of its bytes are trained.

Special-token strings (every added token of the tokenizer that is not pure whitespace)
are control tokens where the *template* writes them. Inside message text they are plain
text by default, as the vendors' encoders treat them: a user who writes ``<|eot_id|>``
does not end the turn. ``parse_special=True`` parses them as control tokens everywhere,
which is what a whole-string tokenization of the rendered text does.

The tokenizer side (special tokens, byte lengths, the tiktoken fast path for byte-level
vocabularies) lives in :mod:`template_forge.tokens.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from template_forge.errors import DataError, RenderError
from template_forge.format.json_text import shorten
from template_forge.format.render import Rendered, render
from template_forge.format.spec import Spec
from template_forge.tokens.vocab import ENGINES, EncodeError, Vocab, cached_vocab, engine_errors, load_tokenizer

__all__ = ["ENGINES", "POLICIES", "EncodeError", "Encoded", "Encoder", "Vocab", "cached_vocab", "encode", "encode_batch",
           "load_tokenizer", "mask_from_spans", "trained_char_spans", "trained_messages"]

POLICIES = ("assistant", "last_assistant", "causal_lm")


@dataclass(frozen=True)
class Encoded:
    """One tokenized conversation.

    Attributes:
        input_ids: token ids (``int32``).
        loss_mask: 1 where the token is trained, else 0 (``uint8``), aligned with ``input_ids``.
    """

    input_ids: np.ndarray
    loss_mask: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_trained(self) -> int:
        return int(self.loss_mask.sum())


# --------------------------------------------------------------------------- policies
def _message_train_flag(msg: Mapping[str, Any], index: int) -> bool | None:
    """A message's own ``train`` / ``weight`` key: True, False, or None when absent."""
    flag = None
    if "train" in msg:
        if not isinstance(msg["train"], bool):
            raise RenderError(f"`train` must be true or false, found {shorten(msg['train'])}.", message_index=index)
        flag = msg["train"]
    if "weight" in msg:
        w = msg["weight"]
        if isinstance(w, bool) or w not in (0, 1):
            raise RenderError(f"`weight` must be 0 or 1, found {shorten(w)}.", message_index=index)
        if flag is not None and flag != bool(w):
            raise RenderError("`train` and `weight` disagree; keep one of them.", message_index=index)
        flag = bool(w)
    if flag and msg.get("role") != "assistant":
        raise RenderError(
            f"only assistant messages can be trained, but this {msg.get('role')} message says "
            "`train: true`/`weight: 1`. Drop the key, or use policy `causal_lm` to train on every token.",
            message_index=index)
    return flag


def trained_messages(messages: Sequence[Mapping[str, Any]], policy: str) -> set[int]:
    """Indices of the assistant messages whose content + suffix are trained under ``policy``."""
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    chosen = set(assistants if policy == "assistant" else assistants[-1:])
    for i, msg in enumerate(messages):
        flag = _message_train_flag(msg, i)
        if flag is True:
            chosen.add(i)
        elif flag is False:
            chosen.discard(i)
    return chosen


def trained_char_spans(rendered: Rendered, messages: Sequence[Mapping[str, Any]], policy: str) -> list[tuple[int, int]]:
    """Character spans trained under ``policy`` (empty turns kept, as transformers keeps them)."""
    if policy == "causal_lm":
        return [(0, len(rendered.text))] if rendered.text else []
    return rendered.trained_spans(trained_messages(messages, policy), keep_empty=True)


def mask_from_spans(starts: np.ndarray, ends: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for every token ``[starts[k], ends[k])`` that overlaps one of the sorted, disjoint ``spans``.

    The rule transformers applies to ``{% generation %}`` spans: a token is trained when
    ``token_end > span_start`` and ``token_start < span_end``.

    Examples:
        >>> mask_from_spans(np.array([0, 2, 5]), np.array([2, 5, 9]), [(3, 6)]).tolist()
        [0, 1, 1]
    """
    if not spans:
        return np.zeros(starts.shape[0], dtype=np.uint8)
    s = np.fromiter((a for a, _ in spans), dtype=np.int64, count=len(spans))
    e = np.fromiter((b for _, b in spans), dtype=np.int64, count=len(spans))
    k = np.searchsorted(e, starts, side="right")  # first span ending after the token starts
    inside = k < len(spans)
    out = np.zeros(starts.shape[0], dtype=np.uint8)
    out[inside] = ends[inside] > s[k[inside]]
    return out


def _mask_monotone(starts: np.ndarray, ends: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """:func:`mask_from_spans` for tokens that tile the text in order (non-decreasing
    starts and ends): one binary search per span instead of one per token."""
    n = starts.shape[0]
    if not spans:
        return np.zeros(n, dtype=np.uint8)
    s = np.fromiter((a for a, _ in spans), dtype=np.int64, count=len(spans))
    e = np.fromiter((b for _, b in spans), dtype=np.int64, count=len(spans))
    lo = np.searchsorted(ends, s, side="right")  # first token ending after the span starts
    hi = np.searchsorted(starts, e, side="left")  # first token starting at or after its end
    keep = hi > lo
    edges = np.zeros(n + 1, dtype=np.int32)
    np.add.at(edges, lo[keep], 1)
    np.add.at(edges, hi[keep], -1)
    return (np.cumsum(edges[:-1]) > 0).astype(np.uint8)


# --------------------------------------------------------------------------- encoder
@dataclass
class _Job:
    rendered: Rendered
    spans: list[tuple[int, int]]
    pieces: list[tuple[int, int, int | None]] | None = None  # (start, end, control id) when split
    ids: np.ndarray | None = field(default=None)


class Encoder:
    """Encodes conversations for one spec and tokenizer; reuse it across calls.

    Args:
        spec: the prompt format.
        tokenizer: folder / ``tokenizer.json`` path, ``tokenizers.Tokenizer``, transformers
            fast tokenizer, or a :class:`Vocab` (to share one between encoders).
        policy: ``assistant`` (every assistant turn, default), ``last_assistant``, or
            ``causal_lm`` (every token). A message's own ``train: true|false`` or ``weight:
            0|1`` key overrides the policy for that message (not under ``causal_lm``).
        parse_special: parse special-token strings inside message text as control tokens
            (default: they are text).
        engine: ``auto``, ``hf`` or ``tiktoken`` (see the module docs).
        variables: values for the spec's template variables.
    """

    def __init__(self, spec: Spec, tokenizer: Any, *, policy: str = "assistant", parse_special: bool = False,
                 engine: str = "auto", variables: Mapping[str, str] | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.spec = spec
        self.policy = policy
        self.parse_special = parse_special
        self.variables = dict(variables or {})
        self.vocab = tokenizer if isinstance(tokenizer, Vocab) else cached_vocab(tokenizer, engine=engine)

    @property
    def engine(self) -> str:
        return self.vocab.engine

    def pairing_warnings(self) -> list[str]:
        """Signs that the tokenizer does not belong to the format: its BOS, or the end-of-turn
        in the assistant suffix, would be tokenized as text instead of as one special token.

        Examples:
            >>> from template_forge.format.spec import load_builtin
            >>> from tokenizers import Tokenizer, models
            >>> enc = Encoder(load_builtin("chatml"), Tokenizer(models.BPE()))
            >>> print(enc.pairing_warnings()[0])  # doctest: +ELLIPSIS
            the assistant suffix '<|im_end|>\\n' holds no special token of this tokenizer: ...
        """
        control = self.vocab.control
        out = []
        bos = self.spec.bos
        if bos and bos not in control:
            out.append(f"the format's bos {bos!r} is not a special token of this tokenizer, so it is tokenized as "
                       "text. Is this the tokenizer of the model the format is for?")
        if self.policy != "causal_lm":
            _, after = self.spec.assistant.around("instruction")
            suffix = "".join(p.text if p.field is None else self.spec.variable_defaults()[p.field] for p in after)
            if self.vocab.control_re is None or not self.vocab.control_re.search(suffix):
                out.append(f"the assistant suffix {suffix!r} holds no special token of this tokenizer: the model "
                           "learns to stop with plain text, not an end-of-turn token. Check the tokenizer matches "
                           "the format.")
        return out

    def render(self, messages: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Rendered:
        messages, tools = conversation_parts(messages)
        return render(self.spec, messages, variables=self.variables, tools=tools)

    def encode(self, messages: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Encoded:
        """Encode one conversation: ``[{"role": …, "content": …}, …]``, or a record
        ``{"messages": [...], "tools": [...]}`` (a JSONL line with tool definitions)."""
        return self._encode_chunk([messages], 0)[0]

    def encode_batch(self, conversations: Iterable[Sequence[Mapping[str, Any]]], *, workers: int | None = None,
                     chunk_size: int | None = None) -> list[Encoded]:
        """Encode many conversations, in order, on ``workers`` threads (default: every core).

        Workers are forked processes that share this encoder's tokenizer (see
        :mod:`template_forge.parallel`); each renders, tokenizes and aligns its own chunks.
        Raises :class:`RenderError` naming the conversation
        and message index of the first conversation the format cannot render.
        """
        from template_forge.parallel import default_workers, ordered_map

        convs = conversations if isinstance(conversations, list) else list(conversations)
        workers = default_workers() if workers is None else max(1, workers)
        if chunk_size is None:  # a few chunks per worker, each big enough to amortise the hand-off
            chunk_size = min(512, max(16, len(convs) // (workers * 4)))
        chunks = [(convs[i : i + chunk_size], i) for i in range(0, len(convs), chunk_size)]
        if len(chunks) <= 1:
            workers = 1
        parts = ordered_map(_encode_chunk_job, self, chunks, workers)
        return [e for part in parts for e in part]

    # -- internals
    def _encode_chunk(self, conversations: Sequence[Sequence[Mapping[str, Any]]], base: int) -> list[Encoded]:
        jobs = []
        for k, messages in enumerate(conversations):
            try:
                messages, tools = conversation_parts(messages)
                rendered = render(self.spec, messages, variables=self.variables, tools=tools)
                jobs.append(_Job(rendered, trained_char_spans(rendered, messages, self.policy)))
            except RenderError as exc:
                if len(conversations) == 1 and base == 0:
                    raise
                err = RenderError(f"conversation {base + k}: {exc}")
                err.message_index = exc.message_index
                raise err from None
        vocab = self.vocab
        whole = [j for j in jobs if not self._needs_split(j.rendered)]
        for job, ids in zip(whole, vocab.encode_texts([j.rendered.text for j in whole])):
            job.ids = ids
        for job in jobs:
            if job.ids is None:
                job.pieces = self._split(job.rendered)
                text = job.rendered.text
                plain = [(text[a:b], a == 0) for a, b, cid in job.pieces if cid is None]
                encoded = iter(vocab.plain(plain))
                ids: list[int] = []
                for a, b, cid in job.pieces:
                    ids.extend([cid] if cid is not None else next(encoded))
                job.ids = np.asarray(ids, dtype=np.int32)
        return self._finish(jobs)

    def _needs_split(self, rendered: Rendered) -> bool:
        """Whether message text holds a control-token string that must stay text, or the
        spec tokenizes pieces apart (``tokenize_apart``)."""
        vocab = self.vocab
        if rendered.breaks:
            return True
        if self.parse_special or vocab.control_re is None:
            return False
        text = rendered.text
        find = text.find
        for s, e in rendered.content_spans:
            for c in vocab.control_firsts:
                if find(c, s, e) != -1:
                    if vocab.control_re.search(text, s, e):
                        return True
                    break
        return False

    def _split(self, rendered: Rendered) -> list[tuple[int, int, int | None]]:
        """Pieces of the text: control tokens the template wrote (everywhere with
        ``parse_special``), and the text between them, cut again at the spec's breaks."""
        vocab = self.vocab
        text = rendered.text
        cuts: list[tuple[int, int, int]] = []
        if vocab.control_re is not None:
            spans = [] if self.parse_special else list(rendered.content_spans)
            pos = 0
            for s, e in spans + [(len(text), len(text))]:
                for m in vocab.control_re.finditer(text, pos, s):
                    cuts.append((m.start(), m.end(), vocab.control[m.group()]))
                pos = max(pos, e)
        breaks = iter(rendered.breaks)
        brk = next(breaks, None)
        pieces: list[tuple[int, int, int | None]] = []

        def plain(a: int, b: int) -> None:
            nonlocal brk
            while brk is not None and brk <= a:
                brk = next(breaks, None)
            while brk is not None and brk < b:
                pieces.append((a, brk, None))
                a, brk = brk, next(breaks, None)
            pieces.append((a, b, None))

        pos = 0
        for a, b, cid in cuts:
            if a > pos:
                plain(pos, a)
            pieces.append((a, b, cid))
            pos = b
        if pos < len(text):
            plain(pos, len(text))
        return pieces

    def _finish(self, jobs: list[_Job]) -> list[Encoded]:
        """Masks for a chunk of tokenized jobs, aligned in one vectorised pass."""
        counts = np.fromiter((j.ids.shape[0] for j in jobs), dtype=np.int64, count=len(jobs))
        all_ids = np.concatenate([j.ids for j in jobs]) if jobs else np.zeros(0, np.int32)
        bounds = np.cumsum(counts)
        if self.policy == "causal_lm":
            mask = np.ones(all_ids.shape[0], dtype=np.uint8)
        else:
            mask = self._masks(jobs, all_ids, counts, bounds)
        splits = bounds[:-1]
        return [Encoded(i, m) for i, m in zip(np.split(all_ids, splits), np.split(mask, splits))]

    def _masks(self, jobs: list[_Job], all_ids: np.ndarray, counts: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        vocab = self.vocab
        mask = np.zeros(all_ids.shape[0], dtype=np.uint8)
        if not any(j.spans for j in jobs):
            return mask
        redo: list[int] = []
        if vocab.lengths_exact:
            lengths = vocab.byte_len[all_ids]
            ends = np.cumsum(lengths)
            starts = ends - lengths
            first = bounds - counts
            # byte position where each conversation starts, and its total as the tokens see it
            base = np.where(counts > 0, starts[np.minimum(first, max(len(starts) - 1, 0))] if len(starts) else 0, 0)
            spans: list[tuple[int, int]] = []
            for k, job in enumerate(jobs):
                text = job.rendered.text
                ascii_text = text.isascii()
                total = len(text) if ascii_text else len(text.encode("utf-8"))
                seen = int(ends[bounds[k] - 1] - base[k]) if counts[k] else 0
                if seen != total:
                    redo.append(k)
                    continue
                b = int(base[k])
                own = job.spans if ascii_text else _char_to_byte_spans(text, job.spans)
                spans.extend((b + s, b + e) for s, e in own)
            mask = _mask_monotone(starts, ends, spans)
            for k in redo:
                mask[bounds[k] - counts[k] : bounds[k]] = 0
        else:
            redo = list(range(len(jobs)))
        for k in redo:
            job = jobs[k]
            if job.spans:
                s, e = self._offsets(job)
                mask[bounds[k] - counts[k] : bounds[k]] = mask_from_spans(s, e, job.spans)
        return mask

    def _offsets(self, job: _Job) -> tuple[np.ndarray, np.ndarray]:
        """Character offsets of every token, from the tokenizer itself (the slow, sure way)."""
        text = job.rendered.text
        vocab = self.vocab
        if job.pieces is None:
            with engine_errors():
                enc = vocab.tok.encode(text, add_special_tokens=False)
            if enc.ids != job.ids.tolist():
                raise DataError(f"the {vocab.engine} engine and the tokenizer encode a conversation differently; "
                                "encode with engine='hf'.")
            off = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            return off[:, 0], off[:, 1]
        starts: list[int] = []
        ends: list[int] = []
        for a, b, cid in job.pieces:
            if cid is not None:
                starts.append(a)
                ends.append(b)
                continue
            offs = vocab.plain_offsets(text[a:b], a == 0)
            starts.extend(a + s for s, _ in offs)
            ends.extend(a + e for _, e in offs)
        return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def conversation_parts(conversation: Any) -> tuple[Any, Any]:
    """``(messages, tools)`` of a list of messages or of a ``{"messages", "tools"}`` record."""
    if isinstance(conversation, Mapping):
        return conversation.get("messages"), conversation.get("tools")
    return conversation, None


def _encode_chunk_job(encoder: Encoder, job: tuple[Sequence[Sequence[Mapping[str, Any]]], int]) -> list[Encoded]:
    return encoder._encode_chunk(*job)


def _char_to_byte_spans(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    pos_c, pos_b = 0, 0
    for s, e in spans:
        pos_b += len(text[pos_c:s].encode("utf-8"))
        bs = pos_b
        pos_b += len(text[s:e].encode("utf-8"))
        out.append((bs, pos_b))
        pos_c = e
    return out


def encode(spec: Spec, tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, policy: str = "assistant",
           parse_special: bool = False, engine: str = "auto") -> Encoded:
    """Encode one conversation; see :class:`Encoder` (build one to encode many).

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> tok = Tokenizer(models.BPE({c: i for i, c in enumerate("<>|abcdefghijklmnopqrstuvwxyz_ \\n")}, []))
        >>> tok.pre_tokenizer = pre_tokenizers.Split(" ", "isolated")
        >>> out = encode(load_builtin("chatml"), tok, [{"role": "user", "content": "hi"},
        ...                                            {"role": "assistant", "content": "yo"}])
        >>> out.num_tokens == len("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo<|im_end|>\\n")
        True
        >>> out.num_trained == len("yo<|im_end|>")  # not the newline after the end-of-turn
        True
    """
    return Encoder(spec, tokenizer, policy=policy, parse_special=parse_special, engine=engine).encode(messages)


def encode_batch(spec: Spec, tokenizer: Any, conversations: Iterable[Sequence[Mapping[str, Any]]], *,
                 policy: str = "assistant", parse_special: bool = False, engine: str = "auto") -> list[Encoded]:
    """Encode many conversations with one :class:`Encoder`."""
    return Encoder(spec, tokenizer, policy=policy, parse_special=parse_special, engine=engine).encode_batch(conversations)
