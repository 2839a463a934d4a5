"""Planning packs: exact best-fit decreasing, conservation under every overflow policy,
determinism, and the per-pack arrays (positions, boundaries, labels, batches)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from template_forge.data.packing import IGNORE_INDEX, collate, cu_seqlens, labels, plan_packs, position_ids


def reference_bfd(sizes: list[int], capacity: int) -> list[int]:
    """Item-by-item best fit, the textbook way: the open bin with the least free space that
    fits; ties to the bin that reached that free space first. O(items × bins)."""
    bins: list[list[int]] = []  # [free, stamp]
    out, stamp = [], 0
    for s in sizes:
        fits = [(free, st, i) for i, (free, st) in enumerate(bins) if free >= s]
        if fits:
            best = min(fits)[2]
        else:
            bins.append([capacity, 0])
            best = len(bins) - 1
        stamp += 1
        bins[best] = [bins[best][0] - s, stamp]
        out.append(best)
    return out


def packs_of(plan) -> list[list[tuple[int, int, int]]]:
    o = plan.pack_offsets
    return [list(zip(plan.sample[a:b].tolist(), plan.start[a:b].tolist(), plan.length[a:b].tolist()))
            for a, b in zip(o[:-1], o[1:])]


lengths_st = st.lists(st.integers(0, 70), max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(1, 50), max_size=80))
def test_vectorised_bfd_equals_item_by_item_best_fit(capacity, sizes):
    from template_forge.data.packing import _best_fit_decreasing

    sizes = sorted((min(s, capacity) for s in sizes), reverse=True)
    got = _best_fit_decreasing(np.array(sizes, dtype=np.int64), capacity).tolist()
    assert got == reference_bfd(sizes, capacity)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 64), lengths_st, st.sampled_from(["drop", "truncate", "split"]), st.integers(0, 3))
def test_every_sample_is_packed_once_or_accounted_for(capacity, lengths, overflow, seed):
    plan = plan_packs(lengths, capacity, overflow=overflow, seed=seed)
    lengths = np.array(lengths, dtype=np.int64)
    assert (plan.pack_lengths <= capacity).all() and (plan.pack_lengths > 0).all()
    assert (plan.length > 0).all()
    dropped = {int(i) for idx in plan.dropped.values() for i in idx}
    assert set(plan.dropped.get("empty", [])) == set(np.flatnonzero(lengths == 0))
    covered: dict[int, list[tuple[int, int]]] = {}
    for s, a, n in zip(plan.sample.tolist(), plan.start.tolist(), plan.length.tolist()):
        covered.setdefault(s, []).append((a, n))
    assert dropped.isdisjoint(covered) and dropped | set(covered) == set(range(len(lengths)))
    over = lengths > capacity
    for s, pieces in covered.items():
        pieces.sort()
        if overflow == "split":  # the pieces tile the sample exactly
            assert [a for a, _ in pieces] == list(range(0, lengths[s], capacity))
            assert sum(n for _, n in pieces) == lengths[s]
        else:  # one piece: the whole sample, or its first `capacity` tokens
            assert pieces == [(0, min(lengths[s], capacity))]
    if overflow == "drop":
        assert set(plan.dropped.get("too_long", [])) == set(np.flatnonzero(over))
    assert plan.truncated == (int(over.sum()) if overflow == "truncate" else 0)
    assert plan.truncated_tokens == (int((lengths[over] - capacity).sum()) if overflow == "truncate" else 0)
    assert plan.split == (int(over.sum()) if overflow == "split" else 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 64), lengths_st, st.integers(0, 5))
def test_same_inputs_and_seed_give_the_same_plan(capacity, lengths, seed):
    a, b = plan_packs(lengths, capacity, seed=seed), plan_packs(list(lengths), capacity, seed=seed)
    assert packs_of(a) == packs_of(b)


def test_seed_shuffles_pack_order_but_not_efficiency():
    lengths = np.random.default_rng(1).integers(1, 300, 2000)
    a, b = plan_packs(lengths, 512, seed=0), plan_packs(lengths, 512, seed=1)
    assert packs_of(a) != packs_of(b)
    assert a.num_packs == b.num_packs


def test_efficiency_on_a_long_tailed_distribution():
    # Chat-like lengths: many short, a long tail. BFD over the whole set wastes almost nothing.
    lengths = np.random.default_rng(0).lognormal(6.5, 0.9, 20_000).astype(np.int64) + 1
    plan = plan_packs(lengths, 4096, overflow="truncate")
    assert plan.efficiency > 0.999
    lower_bound = -(-int(np.minimum(lengths, 4096).sum()) // 4096)
    assert plan.num_packs - lower_bound <= 2


def test_pieces_in_a_pack_are_longest_first():
    plan = plan_packs([3, 9, 1, 6], 10)
    for pack in packs_of(plan):
        assert [n for _, _, n in pack] == sorted((n for _, _, n in pack), reverse=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"context_length": 0}, "positive integer"),
    ({"context_length": 8, "overflow": "wrap"}, "overflow must be one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_packs([1, 2], **kwargs)


def test_negative_lengths_are_refused_with_the_index():
    with pytest.raises(ValueError, match="sample 1 has -2"):
        plan_packs([1, -2], 8)


def test_empty_input_plans_no_packs():
    plan = plan_packs([], 8)
    assert plan.num_packs == 0 and plan.efficiency == 1.0 and plan.tokens == 0


# --------------------------------------------------------------------------- per-pack arrays
seq_st = st.lists(st.integers(1, 20), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(seq_st, st.data())
def test_labels_never_cross_a_sample_boundary(seq_lengths, data):
    n = sum(seq_lengths)
    ids = np.array(data.draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)))
    mask = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.uint8)
    lab, pos, cu = labels(ids, mask, seq_lengths), position_ids(seq_lengths), cu_seqlens(seq_lengths)
    assert cu[0] == 0 and cu[-1] == n and (np.diff(cu) == seq_lengths).all()
    for k, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        assert pos[a:b].tolist() == list(range(seq_lengths[k]))
        assert lab[a] == IGNORE_INDEX  # predicted from the previous sample's last token: never trained
        inner = lab[a + 1:b]
        expect = np.where(mask[a + 1:b] == 1, ids[a + 1:b], IGNORE_INDEX)
        assert inner.tolist() == expect.tolist()


def test_labels_refuse_misaligned_arrays():
    with pytest.raises(ValueError, match="must agree"):
        labels(np.arange(4), np.ones(4), [2, 3])


class _P:
    def __init__(self, lengths, start=0):
        n = sum(lengths)
        self.input_ids = np.arange(start, start + n, dtype=np.int32)
        self.loss_mask = np.ones(n, dtype=np.uint8)
        self.seq_lengths = np.array(lengths, dtype=np.int32)


def test_collate_pads_with_a_segment_of_its_own():
    b = collate([_P([3, 2], start=10), _P([4])], length=6, pad_id=0)
    assert b["input_ids"].tolist() == [[10, 11, 12, 13, 14, 0], [0, 1, 2, 3, 0, 0]]
    assert b["labels"].tolist() == [[-100, 11, 12, -100, 14, -100], [-100, 1, 2, 3, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]
    assert b["seq_lengths"].tolist() == [3, 2, 1, 4, 2]
    assert b["cu_seqlens"].tolist() == [0, 3, 5, 6, 10, 12]
    assert b["num_samples"].tolist() == [2, 1] and int(b["num_trained"]) == 6


def test_collate_defaults_to_the_longest_and_refuses_overlong():
    assert collate([_P([3]), _P([5])])["input_ids"].shape == (2, 5)
    with pytest.raises(ValueError, match="more than length=4"):
        collate([_P([5])], length=4)
