"""The training config: an llmforge fine-tuning YAML, read unchanged.

``load_config(path, overrides)`` returns a validated :class:`TrainConfig` plus the
warnings to show. Three kinds of top-level keys:

* keys the trainer acts on (the fields of :class:`TrainConfig`);
* llmforge keys it does not act on (``deepspeed``, ``worker_resources``, ``logger``, …):
  listed together in one warning, never an error, so an llmforge config runs as it is;
* anything else: an error with a did-you-mean, located at ``file:line``.

Relative paths written in the YAML resolve against the YAML file's folder; paths given as
``key=value`` overrides resolve against the current directory. ``s3://`` URLs stay as
they are.

Examples:
    >>> cfg, warnings = config_from_dict({"model_id": "meta-llama/Meta-Llama-3-8B", "train_path": "t.jsonl",
    ...                                   "output_dir": "out", "num_devices": 4, "lora_config": {"r": 16}})
    >>> cfg.lora_config["r"], cfg.lora_config["lora_alpha"], cfg.format_name()
    (16, 16, 'llama3')
    >>> warnings
    ['keys not acted on by the local trainer: num_devices (use `torchrun --nproc_per_node N tforge train …` for several devices)']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from template_forge.errors import ConfigError, Problem
from template_forge.yaml_lines import LineIndex, did_you_mean, parse_yaml, pydantic_problems

# llmforge keys that this trainer reads but does not act on. Listed in one warning.
LLMFORGE_IGNORED = {
    "num_devices": "use `torchrun --nproc_per_node N tforge train …` for several devices",
    "deepspeed": "LoRA on one node runs plain DDP",
    "worker_resources": None, "trainer_resources": None, "logger": "metrics go to metrics.jsonl",
    "padding": "batches are packed", "flash_attention_2": "chosen automatically when flash-attn is installed",
    "dataset_size_scaling_factor": None, "num_data_blocks_per_device": None, "liger_kernel": None,
    "optimizer_config": None, "classifier_config": None, "preference_tuning_config": None,
    "torch_compile": None, "eval_metric": None, "run_name": None, "train_on_inputs": None,
    "data_processor_config": None, "preprocess_config": None, "max_tokens": None, "lora_modules_to_save": None,
}

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "task_type": "CAUSAL_LM"}
PATH_KEYS = ("initial_base_model_ckpt_path", "initial_adapter_model_ckpt_path", "train_path", "valid_path",
             "output_dir")
# The config a run used, every default filled in, beside its outputs (``tforge merge`` reads it).
RESOLVED_CONFIG = "tforge_config.yaml"
# Keys that may change between a run and its --resume without changing what is trained.
RESUMABLE_CHANGES = {"output_dir", "max_num_checkpoints", "storage_options", "valid_path",
                     "eval_batch_size_per_device", "checkpoint_and_evaluation_frequency"}


@dataclass(frozen=True)
class Family:
    """A well-known model family: what its ``config.json`` must say, and its default format."""

    name: str
    pattern: str  # regex on model_id, matched from the start, case-insensitive
    model_types: tuple[str, ...]
    vocab_size: int | None
    default_format: str | None


FAMILIES = (
    Family("Llama Guard 2", r"meta-llama/Meta-Llama-Guard-2-", ("llama",), 128256, None),
    Family("Llama 3.1+", r"meta-llama/(Meta-)?Llama-3\.[1-3]-", ("llama",), 128256, "llama3.1"),
    Family("Llama 3", r"meta-llama/Meta-Llama-3-", ("llama",), 128256, "llama3"),
    Family("Llama 2", r"meta-llama/Llama-2-", ("llama",), 32000, "llama2"),
    Family("Mistral v0.3", r"mistralai/Mistral-7B-(Instruct-)?v0\.3", ("mistral",), 32768, "mistral-v3"),
    Family("Mistral", r"mistralai/Mistral-7B-", ("mistral",), 32000, "mistral-v1"),
    Family("Mixtral", r"mistralai/Mixtral-8x7B-", ("mixtral",), 32000, "mistral-v1"),
    Family("Zephyr", r"HuggingFaceH4/zephyr-7b", ("mistral",), 32000, "zephyr"),
    Family("Gemma 2", r"google/gemma-2-", ("gemma2",), 256000, "gemma"),
    Family("Gemma", r"google/gemma-", ("gemma",), 256000, "gemma"),
    Family("Qwen 2.5", r"Qwen/Qwen2\.5-", ("qwen2",), None, "qwen2.5"),
    Family("Phi-3", r"microsoft/Phi-3-", ("phi3",), 32064, "phi3"),
    Family("DeepSeek V3", r"deepseek-ai/DeepSeek-V3", ("deepseek_v3",), 129280, "deepseek-v3"),
)


def family_of(model_id: str) -> Family | None:
    """The well-known family ``model_id`` names, if any.

    Examples:
        >>> family_of("meta-llama/Meta-Llama-3-8B").name, family_of("meta-llama/Meta-Llama-Guard-2-8B").name
        ('Llama 3', 'Llama Guard 2')
        >>> family_of("my-org/my-model") is None
        True
    """
    for fam in FAMILIES:
        if re.match(fam.pattern, model_id, flags=re.IGNORECASE):
            return fam
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Frequency(_Strict):
    """``checkpoint_and_evaluation_frequency``: every N epochs or every N optimizer steps."""

    unit: Literal["epochs", "steps"] = "epochs"
    frequency: int = Field(1, ge=1)


class TrainConfig(_Strict):
    """The keys the trainer acts on, with their defaults."""

    model_id: str
    train_path: str
    output_dir: str
    initial_base_model_ckpt_path: str | None = None
    initial_adapter_model_ckpt_path: str | None = None
    valid_path: str | None = None
    context_length: int | None = Field(None, ge=8)  # None: the model's max_position_embeddings
    num_epochs: int = Field(1, ge=1)
    min_update_steps: int = Field(0, ge=0)
    train_batch_size_per_device: int = Field(1, ge=1)
    eval_batch_size_per_device: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler_type: Literal["cosine", "linear"] = "cosine"
    num_warmup_steps: int = Field(0, ge=0)
    checkpoint_and_evaluation_frequency: Frequency = Frequency()
    max_num_checkpoints: int = Field(1, ge=1)
    lora_config: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_LORA))
    prompt_format: str | dict[str, Any] | None = None
    task: Literal["instruction_tuning", "causal_lm"] = "instruction_tuning"
    seed: int = 0
    gradient_checkpointing: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    storage_options: dict[str, Any] = Field(default_factory=dict)  # fsspec options for s3:// paths

    # Where the config came from, for error messages (not a YAML key).
    source: str = Field("<config>", exclude=True)

    def format_name(self) -> str | None:
        """The built-in format name in use (given, or the model family's default), if any."""
        if isinstance(self.prompt_format, str):
            return self.prompt_format
        if self.prompt_format is None:
            fam = family_of(self.model_id)
            return fam.default_format if fam else None
        return None

    @property
    def policy(self) -> str:
        """The loss-mask policy: assistant turns only, or every token."""
        return "assistant" if self.task == "instruction_tuning" else "causal_lm"

    def resolved(self) -> dict:
        """The config as written next to the outputs: every key, defaults filled in."""
        return self.model_dump(mode="json")


def changed_keys(before: dict, after: dict) -> list[str]:
    """The keys of two resolved configs that differ in what they train (not in
    :data:`RESUMABLE_CHANGES`), sorted.

    Examples:
        >>> changed_keys({"seed": 0, "output_dir": "a", "learning_rate": 1e-4}, {"seed": 1, "output_dir": "b"})
        ['learning_rate', 'seed']
    """
    keys = (set(before) | set(after)) - RESUMABLE_CHANGES
    return sorted(k for k in keys if before.get(k) != after.get(k))


def write_resolved(path: Path, resolved: dict) -> None:
    """``tforge_config.yaml``: the resolved config, beside the run's outputs."""
    from template_forge.io import write_atomic

    write_atomic(path, "# the config this run used, every default filled in (written by tforge train)\n"
                 + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def read_resolved(output_dir: str | Path) -> dict | None:
    """The resolved config a run wrote into ``output_dir``; None when there is none."""
    path = Path(output_dir) / RESOLVED_CONFIG
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


# --------------------------------------------------------------------------- reading the YAML
def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """``key=value`` (``a.b=value`` for nested keys); the value is read as YAML.

    Examples:
        >>> parse_override("lora_config.r=16"), parse_override("valid_path=null")
        ((('lora_config', 'r'), 16), (('valid_path',), None))
    """
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise ConfigError([Problem("command line", "", (
            f"`{item}` is not a key=value override. Write e.g. `learning_rate=2e-4` or `lora_config.r=16`."))])
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        value = float(value)  # YAML 1.1 reads 2e-4 as a string
    return tuple(key.strip().split(".")), value


def load_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> tuple[TrainConfig, list[str]]:
    """Read an llmforge-style YAML and apply ``key=value`` overrides."""
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise ConfigError([Problem(label, "", "no such file. Pass the path of a training YAML.")])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(label, "", f"is not UTF-8 text (byte {exc.start}). Save it as UTF-8.")]) from None
    data, index = parse_yaml(text, label, error=ConfigError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(label, "", f"expected a mapping of config keys, found {type(data).__name__}.")])
    _resolve_paths(data, path.parent)
    from_cli: dict = {}
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] in PATH_KEYS and isinstance(value, str) and value:
            value = _absolute(value, Path.cwd())
        node = from_cli
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    data = _merge(data, from_cli)
    return config_from_dict(data, label=label, index=index, overridden=set(_flat_keys(from_cli)))


def _flat_keys(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _flat_keys(v, prefix + (k,))


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _absolute(value: str, folder: Path) -> str:
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


def _resolve_paths(data: dict, folder: Path) -> None:
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key]:
            data[key] = _absolute(data[key], folder)


def config_from_dict(data: dict, *, label: str = "<config>", index: LineIndex | None = None,
                     overridden: set | None = None) -> tuple[TrainConfig, list[str]]:
    """Validate a parsed config; returns ``(config, warnings)``. Every problem is reported at once."""
    index, overridden = index or LineIndex(label), overridden or set()

    def where(p: tuple) -> str:
        return "command line" if p in overridden else index.where(p)

    data = dict(data)
    problems, ignored = _read_llmforge_spellings(data, where)
    unknown, not_acted_on = _drop_other_keys(data, where)
    problems += unknown
    ignored += not_acted_on
    lora = data.get("lora_config")
    if isinstance(lora, dict):
        data["lora_config"] = {**DEFAULT_LORA, **lora}
        problems += _lora_problems(data["lora_config"], where)
    for key in ("learning_rate", "max_grad_norm", "weight_decay"):
        if isinstance(data.get(key), (int, str)) and not isinstance(data.get(key), bool):
            try:
                data[key] = float(data[key])  # `learning_rate: 1e-4` is a string in YAML 1.1
            except ValueError:
                pass
    spec_problem = _prompt_format_problem(data.get("prompt_format"), where)
    if spec_problem:
        problems.append(spec_problem)
    try:
        config = TrainConfig.model_validate({**data, "source": label})
    except ValidationError as exc:
        problems += pydantic_problems(exc, where=where, known=_known_keys, missing=lambda loc: (
            f"is required. Add `{loc[-1]}: …` to the config or pass {loc[-1]}=… on the command line."))
        config = None
    if problems:
        raise ConfigError(_dedupe(problems))
    _check_has_format(config, label)
    warnings = ["keys not acted on by the local trainer: " + ", ".join(ignored)] if ignored else []
    return config, warnings


def _read_llmforge_spellings(data: dict, where) -> tuple[list[Problem], list[str]]:
    """llmforge spells a couple of keys differently: read them as ours, in place. Returns the
    problems found and the ``generation_config`` keys not acted on."""
    problems: list[Problem] = []
    ignored: list[str] = []
    if "no_gradient_checkpoint" in data:
        value = data.pop("no_gradient_checkpoint")
        data.setdefault("gradient_checkpointing", not value if isinstance(value, bool) else value)
    if "num_checkpoints_to_keep" in data:
        data.setdefault("max_num_checkpoints", data.pop("num_checkpoints_to_keep"))
    gen = data.pop("generation_config", None)
    if gen is not None:
        if not isinstance(gen, dict):
            problems.append(Problem(where(("generation_config",)), "generation_config",
                                    "expected a mapping with `prompt_format`."))
        else:
            if "prompt_format" in gen:
                if "prompt_format" in data:
                    problems.append(Problem(where(("prompt_format",)), "prompt_format", (
                        "given twice: top-level and under generation_config. Keep one.")))
                data["prompt_format"] = gen["prompt_format"]
            ignored += [f"generation_config.{k}" for k in gen if k != "prompt_format"]
    return problems, ignored


def _drop_other_keys(data: dict, where) -> tuple[list[Problem], list[str]]:
    """Remove, in place, every key that is not a :class:`TrainConfig` field: llmforge keys the
    trainer does not act on (returned, for one warning) and unknown keys (problems)."""
    fields = set(TrainConfig.model_fields) - {"source"}
    problems: list[Problem] = []
    ignored: list[str] = []
    for key in list(data):
        if key in fields:
            continue
        if key in LLMFORGE_IGNORED:
            why = LLMFORGE_IGNORED[key]
            ignored.append(f"{key} ({why})" if why else key)
        else:
            problems.append(Problem(where((key,)), str(key), (
                f"unknown key.{did_you_mean(key, fields | set(LLMFORGE_IGNORED))} "
                f"The trainer reads: {', '.join(sorted(fields))}.")))
        del data[key]
    return problems, ignored


def _check_has_format(config: TrainConfig, label: str) -> None:
    if config.prompt_format is None and config.format_name() is None:
        raise ConfigError([Problem(label, "prompt_format", (
            f"no prompt format given, and `{config.model_id}` has no default format"
            + (" (Llama Guard 2 prompts are written into the data: use `prompt_format: verbatim`)"
               if "guard" in config.model_id.lower() else "")
            + ". Add `prompt_format: NAME` (see `tforge formats`) or `generation_config.prompt_format: {…}`."))])


def _known_keys(loc: tuple) -> list[str]:
    if loc[:1] == ("checkpoint_and_evaluation_frequency",):
        return list(Frequency.model_fields)
    return sorted(set(TrainConfig.model_fields) - {"source"})


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def _lora_problems(lora: dict, where) -> list[Problem]:
    """Unknown ``lora_config`` keys, named with a did-you-mean (PEFT's LoraConfig fields)."""
    try:
        import dataclasses

        from peft import LoraConfig

        known = {f.name for f in dataclasses.fields(LoraConfig)}
    except ImportError:
        return []
    return [Problem(where(("lora_config", k)), f"lora_config.{k}", (
        f"not a PEFT LoraConfig key.{did_you_mean(k, known)}")) for k in lora if k not in known]


def _prompt_format_problem(value: Any, where) -> Problem | None:
    from template_forge.errors import SpecError
    from template_forge.format.spec import spec_from_dict

    if value is None:
        return None
    try:
        spec_from_dict({"prompt_format": value}, label=where(("prompt_format",)))
    except SpecError as exc:
        return Problem(where(("prompt_format",)), "prompt_format", str(exc))
    return None


def load_format(config: TrainConfig):
    """The :class:`~template_forge.format.spec.Spec` the run trains on."""
    from template_forge.format.spec import spec_from_dict

    name = config.format_name()
    return spec_from_dict({"prompt_format": name if name is not None else config.prompt_format},
                          label=config.source)
