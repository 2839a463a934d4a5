"""Start-up cost of `tforge tokenize`, and the whole CLI against transformers' mask path.

One run, same machine, Llama 3 tokenizer converted offline (as in `preprocess.py`):

* one conversation   `tforge tokenize` as a subprocess, wall time: cold (empty vocabulary
                     cache), warm (cache filled by an earlier run), and with
                     `TFORGE_NO_CACHE=1`; plus `python -c "import …"` of the modules the
                     command loads (the floor the cache cannot remove)
* 1,500 ShareGPT     the whole CLI (`tforge tokenize` as a subprocess, warm cache, its own
  conversations      start-up, JSONL parsing and Arrow shard + manifest writing included)
                     against transformers' `apply_chat_template(..., tokenize=True,
                     return_dict=True, return_assistant_tokens_mask=True)` with the compiled
                     training template, one conversation at a time, in this process
                     (transformers' import and tokenizer loading *not* counted), and a
                     whole transformers program doing the same as a subprocess (counted)

Every figure is the best of --repeat rounds, every method run once per round (interleaved).
The subprocesses get a private `TFORGE_CACHE_DIR` and a private `PYTHONPYCACHEPREFIX`
(bytecode compiled once, as an installed package has it), and run this checkout's code
(`--checkout` runs another one's, e.g. `--checkout /work/main` for the figures before).

    python bench/startup.py [--limit 1500] [--repeat 5] [--checkout PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sharegpt  # noqa: E402
from preprocess import tokenizer_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ("import template_forge.cli, template_forge.data.prepare, template_forge.tokens.encoder, "
           "tokenizers, tiktoken, pyarrow")


def environment(checkout: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "TFORGE_NO_CACHE")}
    env.update(PYTHONPATH=f"{checkout}{os.pathsep}{checkout / 'trainer'}", TFORGE_CACHE_DIR=str(work / "cache"),
               PYTHONPYCACHEPREFIX=str(work / "pycache"), TRANSFORMERS_VERBOSITY="error")
    return env


def tokenize(data: Path, tok: Path, out: Path, env: dict, *extra: str) -> float:
    """Wall time of one `tforge tokenize` subprocess."""
    cmd = [sys.executable, "-m", "template_forge.cli", "tokenize", str(data), "-f", "llama3", "-t", str(tok),
           "-o", str(out), "--overwrite", "-q", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=env["PYTHONPATH"].split(os.pathsep)[0],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_python(code: str, env: dict) -> float:
    return run_python_args([code], env)


def write_jsonl(path: Path, convs: list) -> Path:
    with open(path, "w") as fh:
        for messages in convs:
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path


def transformers_path(tok: Path, convs: list):
    from transformers import AutoTokenizer

    from template_forge.format.compiler import compile_template
    from template_forge.format.spec import load_builtin

    hf = AutoTokenizer.from_pretrained(str(tok))
    template = compile_template(load_builtin("llama3"), training=True)
    return lambda: [hf.apply_chat_template(m, chat_template=template, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True) for m in convs]


HF_PROGRAM = """
import json, sys
from transformers import AutoTokenizer
hf = AutoTokenizer.from_pretrained(sys.argv[1])
template = open(sys.argv[2]).read()
for line in open(sys.argv[3]):
    hf.apply_chat_template(json.loads(line)["messages"], chat_template=template, tokenize=True, return_dict=True,
                           return_assistant_tokens_mask=True)
"""


def transformers_program(tok: Path, data: Path, work: Path, env: dict) -> float:
    """Wall time of a whole transformers program doing the same: import, load the tokenizer, loop."""
    from template_forge.format.compiler import compile_template
    from template_forge.format.spec import load_builtin

    template = work / "template.jinja"
    template.write_text(compile_template(load_builtin("llama3"), training=True))
    return run_python_args([HF_PROGRAM, str(tok), str(template), str(data)], env)


def run_python_args(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", *args], env=env, check=True, cwd=env["PYTHONPATH"].split(os.pathsep)[0])
    return time.perf_counter() - t0


def one_conversation(tok: Path, work: Path, env: dict, repeat: int) -> dict[str, float]:
    one = write_jsonl(work / "one.jsonl", sharegpt.conversations(limit=1))
    no_cache = dict(env, TFORGE_NO_CACHE="1")
    tokenize(one, tok, work / "out-one", env)  # compiles the bytecode, fills the cache
    best = {k: float("inf") for k in ("imports only", "cold cache", "warm cache", "TFORGE_NO_CACHE=1")}
    for _ in range(repeat):
        best["imports only"] = min(best["imports only"], run_python(IMPORTS, env))
        shutil.rmtree(work / "cache", ignore_errors=True)
        best["cold cache"] = min(best["cold cache"], tokenize(one, tok, work / "out-one", env))
        best["warm cache"] = min(best["warm cache"], tokenize(one, tok, work / "out-one", env))
        best["TFORGE_NO_CACHE=1"] = min(best["TFORGE_NO_CACHE=1"], tokenize(one, tok, work / "out-one", no_cache))
    return best


def whole_cli(tok: Path, work: Path, env: dict, convs: list, repeat: int) -> tuple[float, float, float, int]:
    data = write_jsonl(work / "data.jsonl", convs)
    hf = transformers_path(tok, convs)
    tokenize(data, tok, work / "out", env)  # warm cache
    t_cli = t_hf = t_program = float("inf")
    ref = None
    for _ in range(repeat):
        t_cli = min(t_cli, tokenize(data, tok, work / "out", env))
        t0 = time.perf_counter()
        ref = hf()
        t_hf = min(t_hf, time.perf_counter() - t0)
        t_program = min(t_program, transformers_program(tok, data, work, env))
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    tokens = sum(len(r["input_ids"]) for r in ref)
    if manifest["tokens"]["total"] != tokens:
        print(f"   note: tforge wrote {manifest['tokens']['total']} tokens, transformers made {tokens}")
    return t_cli, t_hf, t_program, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1500, help="conversations for the whole-CLI comparison")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache", help="where converted tokenizers are kept")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the tforge checkout whose CLI is timed")
    args = ap.parse_args()
    tok = tokenizer_dir("llama3", args.cache)
    with tempfile.TemporaryDirectory(prefix="tforge-startup-") as tmp:
        work = Path(tmp)
        env = environment(args.checkout.resolve(), work)
        print(f"checkout {args.checkout.resolve()}, {os.cpu_count()} cores, best of {args.repeat} rounds")
        print("\n== one conversation, `tforge tokenize` subprocess wall time (Llama 3 tokenizer)")
        for label, t in one_conversation(tok, work, env, args.repeat).items():
            print(f"   {label:<22} {t:6.3f} s")
        convs = sharegpt.conversations(limit=args.limit)
        t_cli, t_hf, t_program, tokens = whole_cli(tok, work, env, convs, max(1, args.repeat // 2 + 1))
        print(f"\n== {len(convs)} ShareGPT conversations, {tokens:,} tokens")
        print(f"   tforge tokenize (whole CLI, subprocess)   {t_cli:6.2f} s  {tokens / t_cli:12,.0f} tok/s")
        print(f"   transformers apply_chat_template (masks)  {t_hf:6.2f} s  {tokens / t_hf:12,.0f} tok/s")
        print(f"   transformers, whole program (subprocess)  {t_program:6.2f} s  {tokens / t_program:12,.0f} tok/s")
        print(f"   whole CLI vs transformers: {t_hf / t_cli:.1f}x (its loop only), "
              f"{t_program / t_cli:.1f}x (its whole program: import, tokenizer loading, loop)")


if __name__ == "__main__":
    main()
