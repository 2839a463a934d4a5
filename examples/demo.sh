#!/usr/bin/env bash
# The main job on the bundled example: pick a format, see it, compile it into a tokenizer
# folder, and check that transformers serves exactly the same format.
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
echo; echo "demo finished: outputs in $OUT/"
