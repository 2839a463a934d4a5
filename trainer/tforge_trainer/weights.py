"""Bring-your-own weights: where the base model, its tokenizer and the adapter come from, and
the checks that they are what the config says before anything is loaded.

The base weights are a local ``save_pretrained`` folder or an ``s3://`` prefix, fetched once
per node into :func:`cache_dir` (see :mod:`tforge_trainer.remote`). Their ``config.json`` must
match the family ``model_id`` names; their ``tokenizer.json`` is the one the data is tokenized
with. A continued adapter must have the rank and target modules of ``lora_config``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from template_forge.errors import ConfigError, DataError, Problem
from template_forge.io import cache_root, read_json_object
from tforge_trainer.config import TrainConfig, family_of

if TYPE_CHECKING:
    from tforge_trainer.distributed import Dist


@dataclass(frozen=True)
class Weights:
    """Where the run's base weights, tokenizer and adapter come from (local folders)."""

    base: Path  # a save_pretrained folder (or the model_id itself when no path is given)
    base_label: str  # as the user wrote it (s3:// URL or path)
    adapter: Path | None
    adapter_label: str | None


def cache_dir() -> Path:
    """Where ``s3://`` weights are downloaded: ``$TFORGE_CACHE_DIR`` or ``~/.cache/tforge``."""
    return cache_root()


def fetch_path(path: str, what: str, config: TrainConfig, dist: Dist, *, progress: bool) -> Path:
    """A local path for ``path`` (an ``s3://`` one downloaded once per node, by local rank 0,
    into the cache, while the other ranks wait)."""
    from tforge_trainer.remote import fetch

    options = config.storage_options or None
    return dist.first(lambda first: fetch(path, cache_dir=cache_dir(), what=what, progress=progress and first,
                                          storage_options=options), per_node=True)


def fetch_weights(config: TrainConfig, dist: Dist, *, progress: bool) -> Weights:
    """Local folders for the base weights and the adapter."""
    def get(path: str, what: str) -> Path:
        return fetch_path(path, what, config, dist, progress=progress)

    base_label = config.initial_base_model_ckpt_path or config.model_id
    if config.initial_base_model_ckpt_path:
        base = get(config.initial_base_model_ckpt_path, "initial_base_model_ckpt_path")
    else:
        base = Path(config.model_id)
        if not base.is_dir():
            raise ConfigError([Problem(config.source, "initial_base_model_ckpt_path", (
                f"not given, and model_id `{config.model_id}` is not a local folder. Point "
                "initial_base_model_ckpt_path at your weights (a save_pretrained folder or s3://bucket/prefix); "
                "tforge never downloads from a model hub."))])
    adapter = None
    if config.initial_adapter_model_ckpt_path:
        adapter = get(config.initial_adapter_model_ckpt_path, "initial_adapter_model_ckpt_path")
    return Weights(base=base, base_label=base_label, adapter=adapter,
                   adapter_label=config.initial_adapter_model_ckpt_path)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing. {what}")
    return read_json_object(path)


def check_family(config: TrainConfig, base: Path, label: str) -> dict:
    """The base folder's ``config.json``, checked against the family ``model_id`` names."""
    model_config = _read_json(base / "config.json", (
        f"initial_base_model_ckpt_path ({label}) must be a folder in save_pretrained layout "
        "(config.json, *.safetensors, tokenizer files)."))
    fam = family_of(config.model_id)
    if fam is None:
        return model_config
    found_type, found_vocab = model_config.get("model_type"), model_config.get("vocab_size")
    wrong_type = found_type not in fam.model_types
    wrong_vocab = fam.vocab_size is not None and found_vocab != fam.vocab_size
    if wrong_type or wrong_vocab:
        expected = f"model_type `{'` or `'.join(fam.model_types)}`" + (
            f", vocab_size {fam.vocab_size}" if fam.vocab_size else "")
        raise ConfigError([Problem(str(base / "config.json"), "initial_base_model_ckpt_path", (
            f"these weights are model_type `{found_type}` with vocab_size {found_vocab}, but model_id "
            f"`{config.model_id}` names the {fam.name} family ({expected}). Point initial_base_model_ckpt_path "
            f"at {fam.name} weights, or set model_id to the model these weights were trained from."))])
    return model_config


def tokenizer_file(base: Path, label: str) -> Path:
    """The path of the tokenizer saved beside the base weights (``tokenizer.json``)."""
    path = base / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{label}: no tokenizer.json beside the weights. Save the tokenizer into the same folder "
                        "(tokenizer.save_pretrained(folder)), or convert one with `tforge convert-tokenizer`.")
    return path


def load_tokenizer(base: Path, label: str):
    """The base folder's tokenizer, loaded as data (``trust_remote_code=False``: transformers
    neither asks nor runs the folder's code), before the first step: the final output saves it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DataError(f"{label}: transformers cannot load the tokenizer beside the weights ({first}). Save the "
                        "model's own tokenizer into the folder (tokenizer.save_pretrained(folder)).") from None


def check_vocab(tokenizer: Path, tokens: int, model_config: dict) -> None:
    """A tokenizer with more tokens than the model's embedding would index past it.

    Examples:
        >>> check_vocab(Path("tokenizer.json"), 32000, {"vocab_size": 32000})
        >>> check_vocab(Path("tokenizer.json"), 32001, {"vocab_size": 32000})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        template_forge.errors.ConfigError: tokenizer.json, `tokenizer`: has 32001 tokens, the model's vocab_size ...
    """
    if tokens > model_config.get("vocab_size", math.inf):
        raise ConfigError([Problem(str(tokenizer), "tokenizer", (
            f"has {tokens} tokens, the model's vocab_size is "
            f"{model_config.get('vocab_size')}: ids past the embedding would crash training. Use the model's own "
            "tokenizer."))])


def check_adapter(config: TrainConfig, adapter: Path, label: str, warn) -> dict:
    """The adapter's ``adapter_config.json``, checked against the run's ``lora_config``."""
    cfg = _read_json(adapter / "adapter_config.json", (
        f"initial_adapter_model_ckpt_path ({label}) must be a PEFT adapter folder "
        "(adapter_config.json + adapter_model.safetensors)."))
    where = str(adapter / "adapter_config.json")
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(Problem(where, "peft_type", f"is {cfg.get('peft_type')}; only LoRA adapters continue here."))
    given = config.lora_config
    r = cfg.get("r")
    if r != given.get("r"):
        problems.append(Problem(where, "r", (
            f"the adapter has rank {r}, lora_config.r is {given.get('r')}. A continued adapter keeps its rank: "
            f"set lora_config.r={r} (or drop initial_adapter_model_ckpt_path to start a new adapter).")))
    theirs, ours = cfg.get("target_modules"), given.get("target_modules")
    if theirs is not None and ours is not None and _modules(theirs) != _modules(ours):
        problems.append(Problem(where, "target_modules", (
            f"the adapter targets {sorted(_modules(theirs))}, lora_config.target_modules is {sorted(_modules(ours))}. "
            f"Set lora_config.target_modules to the adapter's.")))
    if problems:
        raise ConfigError(problems)
    base_name = cfg.get("base_model_name_or_path")
    if base_name and base_name not in (config.model_id, config.initial_base_model_ckpt_path):
        warn(f"{where}: the adapter was trained on `{base_name}`, this run's model is `{config.model_id}`"
             + (f" with weights from {config.initial_base_model_ckpt_path}" if config.initial_base_model_ckpt_path
                else "") + ". Continuing: its shapes are checked when it loads.")
    return cfg


def _modules(value) -> set:
    return {value} if isinstance(value, str) else set(value)
