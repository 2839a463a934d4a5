#!/usr/bin/env bash
# The main job on the bundled example: pick a format, see it, compile it into a tokenizer
# folder, check that transformers serves exactly the same format, then tokenize a small
# conversation file with loss masks and look at what is trained.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=demo-out
rm -rf "$OUT" && mkdir -p "$OUT"

echo "== built-in formats"
"$BIN/tforge" formats

echo; echo "== examples/conversation.json rendered with llama3 (trained text in green)"
"$BIN/tforge" render llama3 examples/conversation.json --color; echo

echo; echo "== compile llama3 (training flavour) into $OUT/llama3-tokenizer"
"$BIN/tforge" compile llama3 --training --tokenizer-dir "$OUT/llama3-tokenizer"
"$BIN/python" examples/verify.py "$OUT/llama3-tokenizer" llama3 examples/conversation.json

echo; echo "== tforge check: the llama3 spec against the tokenizer folder, then llmforge's Llama 3 format against it"
"$BIN/tforge" check llama3 "$OUT/llama3-tokenizer"
if "$BIN/tforge" check llmforge-llama3 "$OUT/llama3-tokenizer" --show 1; then
  echo "expected a difference (llmforge drops an empty system message)" >&2; exit 1
fi

echo; echo "== a custom spec: examples/my-format.yaml"
"$BIN/tforge" compile examples/my-format.yaml --training --tokenizer-dir "$OUT/my-tokenizer"
"$BIN/tforge" render examples/my-format.yaml examples/conversation.json --color --var today="1 Jan 2027"; echo
"$BIN/python" examples/verify.py "$OUT/my-tokenizer" examples/my-format.yaml examples/conversation.json

echo; echo "== a spec with a typo is explained, not guessed at"
printf 'system: "{instruction}"\nuser: "{instruction}"\nassistent: "{instruction}"\n' > "$OUT/typo.yaml"
if "$BIN/tforge" compile "$OUT/typo.yaml"; then echo "expected an error" >&2; exit 1; fi
echo; echo "== the Llama 3 tokenizer that llama-models ships, converted offline"
TOKENIZER_MODEL=$("$BIN/python" -c 'import llama_models, pathlib; print(pathlib.Path(llama_models.__file__).parent / "llama3" / "tokenizer.model")')
"$BIN/tforge" convert-tokenizer "$TOKENIZER_MODEL" -o "$OUT/llama3-tok"

echo; echo "== tokenize examples/train.jsonl: line 6 uses ShareGPT roles, so the run stops there and writes nothing"
if "$BIN/tforge" tokenize examples/train.jsonl -f llama3 -t "$OUT/llama3-tok" -o "$OUT/train-tok"; then
  echo "expected a located error" >&2; exit 1
fi
test ! -e "$OUT/train-tok"

echo; echo "== the same with --on-error skip: bad lines are left out and counted"
"$BIN/tforge" tokenize examples/train.jsonl -f llama3 -t "$OUT/llama3-tok" -o "$OUT/train-tok" --on-error skip --max-length 1024
"$BIN/python" -c 'import json,sys; m=json.load(open(sys.argv[1])); print("manifest:", m["counts"], m["tokens"]["total"], "tokens,", m["tokens"]["trained"], "trained")' "$OUT/train-tok/manifest.json"

echo; echo "== row 3: '<|eot_id|>' written inside a message stays text; trained tokens on green"
"$BIN/tforge" inspect "$OUT/train-tok" --row 3 --color --html "$OUT/row3.html"; echo
echo; echo "== row 6: the first assistant turn says \"train\": false, so only the last one is trained"
"$BIN/tforge" inspect "$OUT/train-tok" --row 6 --table | tail -n 25

echo; echo "== pack the tokenized rows into sequences of 256 tokens (best-fit decreasing), then the statistics"
"$BIN/tforge" pack "$OUT/train-tok" --context-length 256 -o "$OUT/train-packed"
"$BIN/tforge" stats "$OUT/train-packed" --bins 4 --png "$OUT/train-packed.png"

echo; echo "== or both steps at once; a second run finds the folder up to date and reuses it"
"$BIN/tforge" prepare examples/train.jsonl -f llama3 -t "$OUT/llama3-tok" -n 256 -o "$OUT/prepared" --on-error skip
"$BIN/tforge" prepare examples/train.jsonl -f llama3 -t "$OUT/llama3-tok" -n 256 -o "$OUT/prepared" --on-error skip

echo; echo "== pack 0, sample by sample; then what a trainer derives from seq_lengths"
"$BIN/tforge" inspect "$OUT/train-packed" --row 0 --color; echo
"$BIN/python" - "$OUT/train-packed" <<'PY'
import sys
import numpy as np
from template_forge.data.packed import PackedDataset
pack = PackedDataset(sys.argv[1])[0]
np.set_printoptions(linewidth=110, threshold=40, edgeitems=6)
print("seq_lengths ", pack.seq_lengths, " cu_seqlens", pack.cu_seqlens)
starts = pack.cu_seqlens[:-1]
print("position_ids at each sample start:", pack.position_ids[starts], "(restart at 0)")
print("labels at each sample start:      ", pack.labels[starts], "(never trained across a boundary)")
PY

echo; echo "demo finished: outputs in $OUT/ (open $OUT/row3.html in a browser, $OUT/train-packed.png for the histograms)"
