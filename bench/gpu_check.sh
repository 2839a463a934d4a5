#!/usr/bin/env bash
# LoRA training throughput on one GPU: tforge's packed path vs plain transformers + peft,
# same data, same run (bench/gpu_check.py; bench/README.md explains the output).
#
#   bash bench/gpu_check.sh                # Llama-3-8B shape, random weights, < 8 minutes
#   bash bench/gpu_check.sh --smoke        # tiny model on CPU (no GPU needed)
#   PYTHON=/path/to/python bash bench/gpu_check.sh --steps 5
#
# Needs torch, transformers, peft, numpy, pyarrow, pydantic, PyYAML, tqdm (flash-attn optional)
# in that Python; no network. The
# working tree's template_forge and trainer/tforge_trainer are put first on PYTHONPATH.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PY="${PYTHON:-python3}"
if [[ -z "${PYTHON:-}" && -x "$REPO/.venv/bin/python" ]]; then
    PY="$REPO/.venv/bin/python"
fi
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check: no Python at '$PY' (set PYTHON=...)" >&2; exit 2; }

smoke=0
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && smoke=1; done

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
elif [[ $smoke == 0 ]]; then
    echo "gpu_check: nvidia-smi not found; is this the GPU machine?" >&2
fi

# The working tree's packages first, whatever is installed: template_forge/ and trainer/tforge_trainer/.
export PYTHONPATH="$REPO:$REPO/trainer${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error

"$PY" - "$smoke" <<'EOF'
import sys
mods = {}
for name in ("torch", "transformers", "peft", "flash_attn", "numpy", "pyarrow", "pydantic", "yaml", "tqdm"):
    try:
        mods[name] = getattr(__import__(name), "__version__", "?")
    except ImportError:
        mods[name] = None
print("python", sys.version.split()[0], "|", " ".join(f"{k} {v or '(not installed)'}" for k, v in mods.items()))
missing = [k for k, v in mods.items() if v is None and k != "flash_attn"]  # what template_forge + the trainer import
if missing:
    sys.exit(f"gpu_check: missing {', '.join(missing)}; install them in this Python (PYTHON=...)")
import torch
if sys.argv[1] == "0" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda}); "
             "run on the GPU machine or pass --smoke")
if torch.cuda.is_available():
    print("cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0))
EOF

exec timeout 470 "$PY" bench/gpu_check.py "$@"
