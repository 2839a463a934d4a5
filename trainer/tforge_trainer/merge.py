"""``tforge merge OUTPUT_DIR -o MERGED_DIR``: base weights + the trained adapter → full weights.

The base weights are the run's own (``initial_base_model_ckpt_path`` from the resolved config
``tforge_config.yaml``, fetched from the cache when it is an ``s3://`` URL). The tokenizer,
with the compiled chat template, is copied from ``OUTPUT_DIR``. The merged folder appears
whole or not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from template_forge.errors import DataError
from template_forge.io import occupied, replace_dir
from template_forge.locks import output_lock

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def merge(output_dir: str | Path, merged_dir: str | Path, *, dtype: str = "auto", overwrite: bool = False,
          progress: bool = True) -> Path:
    from tforge_trainer.config import RESOLVED_CONFIG

    out, merged = Path(output_dir), Path(merged_dir)
    for need in ("adapter_config.json", "adapter_model.safetensors", RESOLVED_CONFIG):
        if not (out / need).is_file():
            raise DataError(f"{out}: no {need}. Pass the output_dir of a finished `tforge train` run "
                            "(the final adapter is written when training ends).")
    with output_lock(merged):  # one writer per folder; clears what killed merges left beside it
        if occupied(merged) and not overwrite:
            raise DataError(f"{merged} already exists. Choose another folder or pass --overwrite.")
        return _merge(out, merged, dtype, progress)


def _merge(out: Path, merged: Path, dtype: str, progress: bool) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tforge_trainer.config import read_resolved
    from tforge_trainer.remote import fetch
    from tforge_trainer.trust import check_trusted
    from tforge_trainer.weights import cache_dir

    config = read_resolved(out)
    base_path = config.get("initial_base_model_ckpt_path") or config["model_id"]
    base = fetch(base_path, cache_dir=cache_dir(), what="initial_base_model_ckpt_path", progress=progress,
                 storage_options=config.get("storage_options") or None)
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[dtype]
    # Data only, as in training: refuse folders that would run their own code or unpickle.
    check_trusted(Path(base), field="initial_base_model_ckpt_path", label=str(base_path), weights="*.safetensors")
    check_trusted(out, field="output_dir", label=str(out), weights="adapter_model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype, trust_remote_code=False,
                                                 use_safetensors=True)
    model = PeftModel.from_pretrained(model, out).merge_and_unload()
    tmp = merged.parent / f".{merged.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (out / name).is_file():
            shutil.copy2(out / name, tmp / name)
    replace_dir(tmp, merged)
    return merged
