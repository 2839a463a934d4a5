"""What tforge refuses to load: weights, adapters and tokenizers that could run code.

A base folder, an adapter or a tokenizer copied from elsewhere is data, and is loaded as
data only. Refused, before the first step, with how to fix it:

- a ``config.json`` / ``adapter_config.json`` / ``tokenizer_config.json`` with ``auto_map``
  (transformers would import the folder's own Python code with ``trust_remote_code``);
- ``*.py`` files in the folder (custom model or tokenizer code);
- pickled weights only (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, no ``*.safetensors``):
  unpickling runs whatever the file says.

Everything else in tforge loads with ``trust_remote_code=False`` and ``use_safetensors=True``
as a second line.
"""

from __future__ import annotations

import json
from pathlib import Path

from template_forge.errors import ConfigError, Problem

PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
CONFIGS = ("config.json", "adapter_config.json", "tokenizer_config.json")
_CONVERT = ("Convert it in an environment you trust: load it there (with trust_remote_code only if you have "
            "read its code) and save it with save_pretrained(folder, safe_serialization=True), then point "
            "{field} at that folder.")


def check_trusted(folder: Path, *, field: str, label: str, weights: str) -> None:
    """Refuse ``folder`` (``field`` of the config, written ``label``) if loading it could
    run code; ``weights`` is the safetensors pattern its weights must match
    (``*.safetensors`` for a base, ``adapter_model.safetensors`` for an adapter).

    Examples:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "model.safetensors").write_bytes(b"")
        >>> check_trusted(d, field="initial_base_model_ckpt_path", label=str(d), weights="*.safetensors")
        >>> _ = (d / "modeling_evil.py").write_text("import os")
        >>> check_trusted(d, field="initial_base_model_ckpt_path", label="w", weights="*.safetensors")
        Traceback (most recent call last):
        template_forge.errors.ConfigError: w, `initial_base_model_ckpt_path`: holds Python code (modeling_evil.py)...
    """
    problems = [p for p in (_auto_map(folder), _code(folder), _pickled(folder, weights)) if p]
    if problems:
        fix = _CONVERT.format(field=field)
        raise ConfigError([Problem(label, field, f"{p} tforge never runs code from a weights folder. {fix}")
                           for p in problems])


def _auto_map(folder: Path) -> str | None:
    for name in CONFIGS:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # reported, with its line, where the file is read
        if isinstance(data, dict) and data.get("auto_map"):
            return (f"{name} has `auto_map` ({', '.join(sorted(map(str, data['auto_map'])))[:200]}): it needs "
                    "trust_remote_code, i.e. running the folder's own Python code.")
    return None


def _code(folder: Path) -> str | None:
    found = sorted(p.name for p in folder.rglob("*.py"))
    return f"holds Python code ({', '.join(found[:5])}): custom model or tokenizer code." if found else None


def _pickled(folder: Path, weights: str) -> str | None:
    if any(folder.glob(weights)):
        return None
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if pickled:
        return (f"has only pickled weights ({', '.join(pickled[:5])}), no {weights}: loading a pickle runs "
                "the code it names.")
    return f"has no {weights} weights."
