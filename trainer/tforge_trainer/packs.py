"""Training data: JSONL prepared on the fly into packed shards (or an already prepared
folder), the order packs are trained in, and a micro-batch of packs as torch tensors.

The order is a pure function of ``(seed, epoch)``: epoch ``e`` is a permutation of the packs
drawn from ``numpy.random.default_rng([seed, e])``, cut into optimizer steps of
``world × accumulation × batch`` packs. Within a step, micro-batch ``m`` of rank ``r`` is the
slice ``(m·world + r)·batch …``, so ranks never share a pack. The last step of an epoch is
filled by wrapping around to the permutation's start (as ``DistributedSampler`` does), so
every rank runs the same number of micro-batches. The position in the data is therefore just
the optimizer step: a resumed run sees exactly the packs an uninterrupted one would.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from template_forge.data.packed import PackedDataset, packed_manifest
from template_forge.data.provenance import PACKED_FORMAT
from template_forge.errors import DataError


@dataclass(frozen=True)
class Schedule:
    """Which packs each rank trains on at each optimizer step."""

    num_packs: int
    batch_size: int
    accumulation: int
    world: int
    seed: int
    num_epochs: int
    min_update_steps: int = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_packs / self.global_batch))

    @property
    def total_steps(self) -> int:
        """``num_epochs`` epochs, or more whole-or-partial epochs to reach ``min_update_steps``."""
        return max(self.num_epochs * self.steps_per_epoch, self.min_update_steps)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return _epoch_order(self, epoch)

    def micro_batches(self, step: int, rank: int) -> list[np.ndarray]:
        """Pack indices of rank ``rank``'s micro-batches at optimizer step ``step`` (0-based).

        Examples:
            >>> s = Schedule(num_packs=10, batch_size=2, accumulation=2, world=2, seed=0, num_epochs=1)
            >>> s.steps_per_epoch, s.total_steps
            (2, 2)
            >>> r0, r1 = (set(np.concatenate(s.micro_batches(0, r)).tolist()) for r in (0, 1))
            >>> len(r0), len(r1), r0 & r1          # step 0: 4 packs each, none shared
            (4, 4, set())
            >>> every = [i for step in (0, 1) for r in (0, 1) for mb in s.micro_batches(step, r) for i in mb]
            >>> sorted(set(every)) == list(range(10)), len(every)   # the last step wraps around
            (True, 16)
        """
        epoch, within = divmod(step, self.steps_per_epoch)
        chunk = self.epoch_order(epoch)[within * self.global_batch:(within + 1) * self.global_batch]
        return [chunk[(m * self.world + rank) * self.batch_size:(m * self.world + rank + 1) * self.batch_size]
                for m in range(self.accumulation)]

    def epoch_of(self, step: int) -> float:
        """Epochs done after ``step`` optimizer steps (fractional)."""
        return step / self.steps_per_epoch


@functools.lru_cache(maxsize=2)
def _epoch_order(schedule: Schedule, epoch: int) -> np.ndarray:
    """Drawn once per epoch, not at every step (a permutation of every pack)."""
    perm = np.random.default_rng([schedule.seed, epoch]).permutation(schedule.num_packs)
    out = np.resize(perm, schedule.steps_per_epoch * schedule.global_batch)  # wraps around
    out.flags.writeable = False
    return out


def collate_packs(ds: PackedDataset, indices: np.ndarray, pad_id: int, multiple: int) -> dict:
    """Packs ``indices`` of ``ds`` as a torch batch, padded to a multiple of ``multiple``
    (rows of :func:`template_forge.data.packing.collate`, plus ``num_tokens``: the real tokens)."""
    from template_forge.data.packing import collate

    packs = [ds[int(i)] for i in indices]
    length = max(len(p.input_ids) for p in packs)
    length = -(-length // multiple) * multiple
    arrays = collate(packs, length=length, pad_id=pad_id)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
             for k, v in arrays.items()}
    batch["num_tokens"] = sum(len(p.input_ids) for p in packs)  # without padding
    return batch


def is_prepared(path: str | Path) -> bool:
    """A folder holding packed shards (``tforge prepare`` / ``tforge pack`` output)."""
    return packed_manifest(path) is not None


def prepare(path: str, *, name: str, spec, tokenizer: Path, tokenizer_sha256: str, out_root: Path,
            context_length: int, policy: str, seed: int, log, progress: bool) -> PackedDataset:
    """``path`` as packed shards: a prepared folder as it is (checked), or a JSONL file
    prepared into ``out_root/name`` (reused when its manifest's input hashes match)."""
    from template_forge.data.prepare import prepare_file
    from template_forge.tokens.encoder import Encoder

    source = Path(path)
    if source.is_dir():
        if not is_prepared(source):
            raise DataError(f"{source}: a folder, but not a prepared one (no manifest.json of format "
                            f"{PACKED_FORMAT}). Pass a JSONL file, or a folder made by `tforge prepare`.")
        ds = PackedDataset(source)
        inputs = ds.manifest.get("inputs", {})
        if ds.context_length > context_length:
            raise DataError(f"{source}: packed to {ds.context_length} tokens, more than context_length "
                            f"{context_length}. Prepare it again with -n {context_length}, or raise context_length.")
        if inputs.get("tokenizer_sha256") not in (None, tokenizer_sha256):
            raise DataError(f"{source}: prepared with another tokenizer than the base model's ({tokenizer}). "
                            "Prepare it again with the model's tokenizer.")
        if inputs.get("policy") not in (None, policy):
            log(f"warning: {source} was prepared with loss policy `{inputs.get('policy')}`; the config's task "
                f"asks for `{policy}`. Training on the prepared loss masks.")
        return ds
    if not source.is_file():
        raise DataError(f"{source}: no such file or folder. {name}_path must be a JSONL file of "
                        "{\"messages\": [...]} lines, or a folder made by `tforge prepare`.")
    out = out_root / name
    bar = _Bar(progress, f"preparing {source.name}")
    manifest, reused = prepare_file(source, Encoder(spec, str(tokenizer), policy=policy), out,
                                    context_length=context_length, seed=seed, overwrite=True,
                                    on_tokenize=bar.bytes(source.stat().st_size), on_pack=bar.packs)
    bar.close()
    stats = manifest["stats"]
    log(f"{name}: {'reused' if reused else 'prepared'} {out} — {stats['packs']} packs of ≤{context_length} tokens, "
        f"{stats['packed_samples']} samples ({stats['dropped_samples']} longer than context_length dropped), "
        f"{stats['trained_tokens']} trained tokens, efficiency {100 * stats['efficiency']:.2f}%")
    return PackedDataset(out)


class _Bar:
    """A tqdm bar for the tokenize and pack phases (hidden when not a terminal)."""

    def __init__(self, enabled: bool, label: str):
        self.enabled, self.label, self.bar, self.unit = enabled, label, None, None

    def _open(self, total: int, unit: str, desc: str):
        from tqdm.auto import tqdm

        if self.bar is not None:
            self.bar.close()
        self.unit = unit
        self.bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not self.enabled, leave=False)

    def bytes(self, total: int):
        def update(n: int) -> None:
            if self.bar is None:
                self._open(total, "B", f"{self.label}: tokenize")
            self.bar.update(n)
        return update

    def packs(self, done: int, total: int) -> None:
        if self.unit != "pack":
            self._open(total, "pack", f"{self.label}: pack")
        self.bar.n = done  # packs written so far
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
