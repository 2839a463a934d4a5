#!/usr/bin/env bash
# The Llama Guard 2 walkthrough, end to end, offline, on a CPU in a few minutes: a tiny
# stand-in for Meta-Llama-3-8B (your own weights in real life), labelled conversations turned
# into pre-formatted Llama Guard 2 prompts, a LoRA run interrupted and resumed, its loss
# curve, and the trained adapter served through the tokenizer's chat template.
#
#   bash examples/llama-guard-2/run.sh              # from the repository root (or from anywhere)
#   BIN=/path/to/venv/bin bash run.sh               # another environment's tforge and python
#
# Every file it writes goes under examples/llama-guard-2/work/ (git-ignored). Steps a and b
# reuse what an earlier run made; the training run (c, d) starts afresh each time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../.venv/bin}
BIN=$(cd "$BIN" && pwd)   # absolute, so a BIN given relative to the caller's folder still works
cd "$HERE"
# Nothing here needs the network; make sure nothing tries.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== a. a tiny random Llama 3 (8B's vocabulary and token ids, 2 layers of width 64) + the Llama 3 tokenizer"
"$BIN/python" make_tiny_model.py work/tiny-llama3 --tokenizer-dir work/llama3-tokenizer

echo; echo "== b. raw.jsonl -> Llama Guard 2 prompts (system), empty user turn, verdict (assistant)"
CHECK=()
VENDOR_TEMPLATE=../../../shared/conformance/templates/llama-guard-2.jinja   # Meta-Llama-Guard-2-8B's chat template
if [[ -f $VENDOR_TEMPLATE ]]; then CHECK=(--check-template "$VENDOR_TEMPLATE"); fi
"$BIN/python" prepare_data.py raw.jsonl -o work/data --valid-fraction 0.2 --seed 0 "${CHECK[@]}"

echo; echo "== b. line 1 of work/data/train.jsonl as the trainer sees it (verbatim format): only the verdict is trained"
"$BIN/tforge" inspect work/data/train.jsonl --line 1 -f verbatim -t work/tiny-llama3; echo
"$BIN/tforge" inspect work/data/train.jsonl --line 1 -f verbatim -t work/tiny-llama3 --table | tail -n 7

echo; echo "== c. train, interrupted: stop after optimizer step 6 of 16 (a checkpoint is saved there)"
rm -rf work/out   # a fresh run each time: tforge train refuses an output_dir holding another run
"$BIN/tforge" train config.yaml --stop-at-step 6 --quiet

echo; echo "== d. resume from the step-6 checkpoint and finish the run"
"$BIN/tforge" train config.yaml --resume --quiet

echo; echo "== e. the loss curve (work/out/loss.png)"
"$BIN/tforge" plot work/out

echo; echo "== f. serve it: the saved tokenizer's chat template, then base weights + adapter"
"$BIN/python" render_prompt.py --out work/out --base work/tiny-llama3 --valid work/data/valid.jsonl --line 1

echo; echo "walkthrough finished: adapter, tokenizer and metrics in $HERE/work/out (loss curve: work/out/loss.png)"
