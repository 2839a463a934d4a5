"""Sequences → packs: best-fit-decreasing bin packing of token sequences into a context
length, and the per-pack arrays a trainer derives from ``seq_lengths``.

A pack holds several samples end to end. Nothing in a pack says where one sample ends,
except ``seq_lengths``; from it come ``position_ids`` (restarting at 0 for every sample),
``cu_seqlens`` (flash-attention varlen boundaries) and ``labels`` (−100 where not trained
*and* on the first token of every sample, so that no loss crosses a boundary)::

    pack          │ sample 0 ─────────────│ sample 1 ───────│ padding (collate only)
    input_ids     │ <s> U  U  A  A  </s>  │ <s> U  A  </s>  │ 0   0
    loss_mask     │  0  0  0  1  1   1    │  0  0  1   1    │
    seq_lengths   │ 6                     │ 4               │
    position_ids  │  0  1  2  3  4   5    │  0  1  2   3    │ 0   1
    cu_seqlens    0                       6                10   12
    labels        │ -100 -100 -100 A A </s>│ -100 -100 A </s>│ -100 -100

Causal LM losses in transformers shift labels by one internally: ``labels[i]`` is predicted
from position ``i - 1``. The first token of sample 1 would be "predicted" from the last
token of sample 0, which is why it is always −100 here; do not shift labels yourself.

Planning is pure numpy on lengths, so millions of samples plan in seconds; the tokens
themselves are moved by :mod:`template_forge.data.packed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

OVERFLOW = ("drop", "truncate", "split")
IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "OVERFLOW", "Plan", "collate", "cu_seqlens", "labels", "plan_packs", "position_ids"]


@dataclass(frozen=True)
class Plan:
    """Which piece of which sample goes into which pack.

    A *piece* is a whole sample, or with ``overflow="truncate"``/``"split"`` a slice of one.
    Pieces are listed pack by pack: the pieces of pack ``p`` are
    ``pack_offsets[p]:pack_offsets[p + 1]``.

    Attributes:
        context_length: capacity of a pack, in tokens.
        sample: index of the source sample of each piece (``int64``).
        start: first token of the piece inside its sample (``int64``).
        length: tokens in the piece (``int64``).
        pack_offsets: ``num_packs + 1`` offsets into the piece arrays (``int64``).
        dropped: indices of samples left out, by reason (``too_long``, ``empty``).
        truncated: samples cut to ``context_length`` tokens (their first ones kept).
        truncated_tokens: tokens cut off by truncation.
        split: samples cut into several pieces.
    """

    context_length: int
    sample: np.ndarray
    start: np.ndarray
    length: np.ndarray
    pack_offsets: np.ndarray
    dropped: dict[str, np.ndarray]
    truncated: int = 0
    truncated_tokens: int = 0
    split: int = 0

    @property
    def num_packs(self) -> int:
        return len(self.pack_offsets) - 1

    @cached_property  # read once per record batch while writing: computed once
    def pack_lengths(self) -> np.ndarray:
        """Real tokens in each pack."""
        cum = np.concatenate([[0], np.cumsum(self.length)])
        return cum[self.pack_offsets[1:]] - cum[self.pack_offsets[:-1]]

    @property
    def tokens(self) -> int:
        return int(self.length.sum())

    @property
    def efficiency(self) -> float:
        """Real tokens / capacity (``num_packs × context_length``); 1.0 when there are no packs."""
        return self.tokens / (self.num_packs * self.context_length) if self.num_packs else 1.0


def plan_packs(lengths: Sequence[int] | np.ndarray, context_length: int, *, overflow: str = "drop",
               seed: int = 0) -> Plan:
    """Plan best-fit-decreasing packs of ``lengths`` into bins of ``context_length`` tokens.

    Samples are placed longest first, each into the pack whose free space fits it most
    tightly (a new pack when none fits); this is TRL's default strategy, planned here
    for the whole dataset at once. Samples longer than ``context_length`` are dropped
    (``overflow="drop"``, counted as ``too_long``), cut to their first ``context_length``
    tokens (``"truncate"``) or cut into pieces of ``context_length`` tokens (``"split"``,
    each piece a sample of its own). ``seed`` orders samples of equal length and shuffles
    the order of the packs; the same inputs and seed give the same plan.

    Examples:
        >>> plan = plan_packs([5, 2, 3, 1, 7], 8)
        >>> [sorted(plan.sample[a:b].tolist()) for a, b in zip(plan.pack_offsets[:-1], plan.pack_offsets[1:])]
        [[0, 2], [1], [3, 4]]
        >>> plan.pack_lengths.tolist(), plan.efficiency
        ([8, 2, 8], 0.75)
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, not {overflow!r}")
    if not isinstance(context_length, (int, np.integer)) or context_length < 1:
        raise ValueError(f"context_length must be a positive integer, not {context_length!r}")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size and lengths.min() < 0:
        raise ValueError(f"lengths must be >= 0; sample {int(np.argmin(lengths))} has {int(lengths.min())}")
    rng = np.random.default_rng(seed)
    sample, start, length, dropped, info = _pieces(lengths, int(context_length), overflow)
    # Longest first; equal lengths in a seeded random order (a stable sort of a permutation).
    perm = rng.permutation(len(length))
    order = perm[np.argsort(-length[perm], kind="stable")]
    bin_of = _best_fit_decreasing(length[order], int(context_length))
    num_bins = int(bin_of.max()) + 1 if bin_of.size else 0
    # Shuffle the packs (BFD creates them longest first), keep each pack's pieces in placement order.
    rank = rng.permutation(num_bins)
    by_pack = order[np.argsort(rank[bin_of], kind="stable")]
    counts = np.bincount(rank[bin_of], minlength=num_bins)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Plan(int(context_length), sample[by_pack], start[by_pack], length[by_pack], offsets, dropped, **info)


def _pieces(lengths: np.ndarray, capacity: int, overflow: str):
    """The pieces to pack, after the overflow policy: (sample, start, length, dropped, counts)."""
    index = np.arange(len(lengths), dtype=np.int64)
    over = lengths > capacity
    dropped = {"empty": index[lengths == 0]}
    keep = lengths > 0
    info = {}
    if overflow == "drop":
        dropped["too_long"] = index[over]
        keep &= ~over
    elif overflow == "truncate":
        info = {"truncated": int(over.sum()), "truncated_tokens": int((lengths[over] - capacity).sum())}
    dropped = {k: v for k, v in dropped.items() if v.size}
    index, lengths = index[keep], lengths[keep]
    if overflow != "split":
        return index, np.zeros_like(index), np.minimum(lengths, capacity), dropped, info
    # Split: ceil(L / capacity) pieces, all full but the last.
    num = -(-lengths // capacity)
    sample = np.repeat(index, num)
    first = np.repeat(np.cumsum(num) - num, num)
    start = (np.arange(len(sample)) - first) * capacity
    length = np.minimum(np.repeat(lengths, num) - start, capacity)
    return sample, start.astype(np.int64), length, dropped, {"split": int((num > 1).sum())}


def _best_fit_decreasing(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """Bin of each item, for ``sizes`` sorted longest first (each in ``1..capacity``).

    Items of one size are placed together. While placing size ``s``, the best-fit bin is
    the one with the least free space ``r >= s``; after taking an item it has ``r - s``
    free, less than any other candidate, so it keeps taking items until ``r < s``: a bin
    with ``r`` free absorbs ``r // s`` items at once. Bins are bucketed by free space and
    a bucket is consumed first in, first out, which is exactly item-by-item best fit with
    ties going to the bin that reached that free space first. Every bin's free space at
    least halves each time it is visited (``r mod s < r / 2``), so the work is about
    ``bins × log2(capacity)`` bucket moves plus one numpy scan per distinct size.
    """
    n = len(sizes)
    bin_of = np.empty(n, dtype=np.int64)
    if not n:
        return bin_of
    bins = _OpenBins(capacity)
    edges = np.flatnonzero(np.diff(sizes)) + 1
    for a, b in zip(np.concatenate([[0], edges]).tolist(), np.concatenate([edges, [n]]).tolist()):
        got_bins, got_counts = bins.place(int(sizes[a]), b - a)
        bin_of[a:b] = np.repeat(np.asarray(got_bins, dtype=np.int64), got_counts)
    return bin_of


class _OpenBins:
    """The bins of a best-fit-decreasing plan that still have room, bucketed by free space;
    each bucket is a first-in-first-out queue (``buckets[r][:head[r]]`` were taken already)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.buckets: list[list[int]] = [[] for _ in range(capacity + 1)]
        self.head = [0] * (capacity + 1)
        self.occupied = np.zeros(capacity + 1, dtype=bool)
        self.opened = 0

    def place(self, s: int, left: int) -> tuple[list[int], list[int]]:
        """Place ``left`` items of size ``s``: the bins they go to, and how many each takes."""
        got_bins: list[int] = []
        got_counts: list[int] = []
        for r in (s + np.flatnonzero(self.occupied[s:])).tolist():
            use = self._take(r, -(-left // (r // s)))
            left = self._fill(use, r, s, left, got_bins, got_counts)
            if not left:
                return got_bins, got_counts
        new = list(range(self.opened, self.opened + -(-left // (self.capacity // s))))
        self.opened += len(new)  # new bins, with `capacity` free
        self._fill(new, self.capacity, s, left, got_bins, got_counts)
        return got_bins, got_counts

    def _take(self, r: int, most: int) -> list[int]:
        """Up to ``most`` bins from the front of bucket ``r``."""
        bucket, h = self.buckets[r], self.head[r]
        use = bucket[h:h + most]
        self.head[r] = h + len(use)
        if self.head[r] == len(bucket):
            self.buckets[r], self.head[r], self.occupied[r] = [], 0, False
        elif self.head[r] > 4096 and self.head[r] * 2 > len(bucket):
            self.buckets[r], self.head[r] = bucket[self.head[r]:], 0
        return use

    def _fill(self, use: list[int], r: int, s: int, left: int, got_bins: list[int], got_counts: list[int]) -> int:
        """Fill bins ``use`` (``r`` free each) with items of size ``s``, the last one with what is left;
        put them back in the buckets of their new free space; returns the items still to place."""
        per_bin = r // s
        last = min(per_bin, left - (len(use) - 1) * per_bin)
        got_bins += use
        got_counts += [per_bin] * (len(use) - 1) + [last]
        self._put(use[:-1], r - per_bin * s)
        self._put(use[-1:], r - last * s)
        return left - (len(use) - 1) * per_bin - last

    def _put(self, bins: list[int], free: int) -> None:
        if free > 0 and bins:
            self.buckets[free].extend(bins)
            self.occupied[free] = True


# --------------------------------------------------------------------------- per-pack arrays
def position_ids(seq_lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Positions restarting at 0 for every sample (``int64``).

    Examples:
        >>> position_ids([3, 2]).tolist()
        [0, 1, 2, 0, 1]
    """
    seq_lengths = np.asarray(seq_lengths, dtype=np.int64)
    starts = np.cumsum(seq_lengths) - seq_lengths
    return np.arange(int(seq_lengths.sum()), dtype=np.int64) - np.repeat(starts, seq_lengths)


def cu_seqlens(seq_lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Cumulative sample boundaries, ``[0, l0, l0 + l1, …]`` (``int32``, flash-attention varlen).

    Examples:
        >>> cu_seqlens([3, 2]).tolist()
        [0, 3, 5]
    """
    seq_lengths = np.asarray(seq_lengths, dtype=np.int64)
    out = np.zeros(len(seq_lengths) + 1, dtype=np.int32)
    np.cumsum(seq_lengths, out=out[1:])
    return out


def labels(input_ids: np.ndarray, loss_mask: np.ndarray, seq_lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """``input_ids`` where trained, −100 elsewhere and on the first token of every sample (``int64``).

    Not shifted: transformers' causal LM losses shift internally.

    Examples:
        >>> labels(np.array([5, 6, 7, 8, 9]), np.array([1, 1, 1, 1, 1]), [3, 2]).tolist()
        [-100, 6, 7, -100, 9]
    """
    input_ids, loss_mask = np.asarray(input_ids), np.asarray(loss_mask)
    if input_ids.shape != loss_mask.shape or int(np.sum(seq_lengths)) != input_ids.shape[0]:
        raise ValueError(f"input_ids {input_ids.shape}, loss_mask {loss_mask.shape} and sum(seq_lengths) "
                         f"{int(np.sum(seq_lengths))} must agree")
    out = np.where(loss_mask.astype(bool), input_ids.astype(np.int64), IGNORE_INDEX)
    out[cu_seqlens(seq_lengths)[:-1][np.asarray(seq_lengths) > 0]] = IGNORE_INDEX
    return out


def collate(packs: Sequence, *, length: int | None = None, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Stack packs into a batch of numpy arrays, padded on the right to ``length``.

    ``packs`` are objects with ``input_ids``, ``loss_mask`` and ``seq_lengths`` (such as
    :class:`template_forge.data.packed.Pack`). Padding is a segment of its own: labels −100,
    positions from 0, and its own entry in ``seq_lengths`` and ``cu_seqlens``, so a
    block-diagonal or varlen attention keeps it apart from the samples.

    Returns:
        ``input_ids``, ``labels``, ``position_ids`` (``[B, length]``), ``cu_seqlens`` (flat
        over the whole batch, ``int32``), ``seq_lengths`` (flat, ``int32``),
        ``num_samples`` (per row), and ``num_trained`` (labels that are not −100).

    Examples:
        >>> from types import SimpleNamespace as P
        >>> b = collate([P(input_ids=np.array([7, 8, 9]), loss_mask=np.array([0, 1, 1]), seq_lengths=np.array([3]))],
        ...             length=5)
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["position_ids"].tolist(), b["cu_seqlens"].tolist()
        ([[7, 8, 9, 0, 0]], [[-100, 8, 9, -100, -100]], [[0, 1, 2, 0, 1]], [0, 3, 5])
    """
    sizes = [len(p.input_ids) for p in packs]
    length = max(sizes, default=0) if length is None else length
    if max(sizes, default=0) > length:
        raise ValueError(f"a pack has {max(sizes)} tokens, more than length={length}")
    ids = np.full((len(packs), length), pad_id, dtype=np.int64)
    lab = np.full((len(packs), length), IGNORE_INDEX, dtype=np.int64)
    seqs: list[np.ndarray] = []
    for row, (p, n) in enumerate(zip(packs, sizes)):
        ids[row, :n] = p.input_ids
        lab[row, :n] = labels(p.input_ids, p.loss_mask, p.seq_lengths)
        seqs.append(np.asarray(p.seq_lengths, dtype=np.int64))
        if n < length:
            seqs[-1] = np.append(seqs[-1], length - n)
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    return {
        "input_ids": ids, "labels": lab,
        "position_ids": position_ids(flat).reshape(len(packs), length),
        "cu_seqlens": cu_seqlens(flat), "seq_lengths": flat.astype(np.int32),
        "num_samples": np.array([len(p.seq_lengths) for p in packs], dtype=np.int64),
        "num_trained": np.int64((lab != IGNORE_INDEX).sum()),
    }
