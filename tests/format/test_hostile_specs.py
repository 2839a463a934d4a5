"""Hostile spec and config YAML: alias bombs, recursive aliases, deep nesting, binary bytes,
huge strings, reserved variable names. Each ends in a located SpecError / ConfigError,
never a traceback or a hang (the fuzz asserts the second by finishing)."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import nodes

from template_forge.errors import ConfigError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.names import COMPILER_NAMES, RESERVED_NAMES
from template_forge.format.spec import load_builtin, load_spec, load_spec_text
from template_forge.yaml_lines import MAX_YAML_CHARS, MAX_YAML_DEPTH, MAX_YAML_NODES, parse_yaml

FUZZ = settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", 60)), derandomize=not os.environ.get("TFORGE_RANDOM"),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE = "system: '{instruction}'\nuser: 'U {instruction}'\nassistant: 'A {instruction}'\n"


def bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level's list holds `width` aliases of the one before (width**levels values)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * width) + "]" for k in range(1, levels)]
    return BASE + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- aliases
def test_alias_bomb_is_refused_at_the_line_that_expands():
    with pytest.raises(SpecError, match=rf"s\.yaml:9: expands to more than {MAX_YAML_NODES} values through aliases"):
        load_spec_text(bomb(), label="s.yaml")


@pytest.mark.parametrize("text, line", [
    ("a: &a [*a]\n", 1),
    ("a: &a\n  b: *a\n", 1),
    ("x: 1\nm: &m\n  - [1, {k: *m}]\n", 2),
])
def test_recursive_aliases_are_refused_located(text, line):
    with pytest.raises(SpecError, match=rf"s\.yaml:\d+: has a recursive alias: the node anchored at line {line}"):
        load_spec_text(text, label="s.yaml")


def test_small_aliases_and_merge_keys_still_load_and_index():
    text = "prompt_format:\n  <<: {system: '{instruction}', assistant: 'A {instruction}'}\n  user: 'U {instruction}'\n"
    spec = load_spec_text(text, label="s.yaml")
    assert spec.assistant.pieces[-1].field == "instruction"
    _data, index = parse_yaml("a: &x {b: 1}\nc: *x\n", "c.yaml")
    assert index.where(("c", "b")) == "c.yaml:1"  # an alias is indexed where its node is written


def test_config_loader_refuses_alias_bombs_and_recursion(tmp_path):
    pytest.importorskip("pydantic")
    from tforge_trainer.config import load_config

    path = tmp_path / "train.yaml"
    path.write_text("model_id: m\n" + bomb().split("\n", 3)[3])
    with pytest.raises(ConfigError, match=r"train\.yaml:\d+: expands to more than"):
        load_config(path)
    path.write_text("model_id: m\nlora_config: &l {r: *l}\n")
    with pytest.raises(ConfigError, match=r"train\.yaml:2: has a recursive alias"):
        load_config(path)


# --------------------------------------------------------------------------- size, depth, bytes
@pytest.mark.parametrize("text, pattern", [
    ("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), rf"s\.yaml:1: nests mappings and lists more than {MAX_YAML_DEPTH} deep"),
    ("a:\n" + "".join("  " * k + f"k{k}:\n" for k in range(1, 150)) + "  " * 150 + "x", r"s\.yaml:\d+: nests mappings"),
    ("[" + ",".join(["1"] * (MAX_YAML_NODES + 1)) + "]", rf"s\.yaml:1: has more than {MAX_YAML_NODES} values"),
    ("user: '" + "x" * MAX_YAML_CHARS + "'", rf"s\.yaml: is {MAX_YAML_CHARS + 8} characters long"),
    (BASE + "bos: 'a\0b'\n", r"s\.yaml:4: is not valid YAML: it holds the character U\+0000"),
    (BASE + "bos: \x1b[31m\n", r"s\.yaml:4: is not valid YAML: it holds the character U\+001B"),
    (BASE + "bos: " + "9" * 5000 + "\n", r"s\.yaml: cannot be read as YAML \(ValueError: Exceeds the limit"),
    (BASE + "bos: !!binary aGk=\n", r"s\.yaml:4, `bos`: expected a string"),
    (BASE + "bos: 2001-13-45\n", r"s\.yaml: cannot be read as YAML \(ValueError: month must be in 1\.\.12\)"),
    (BASE + "? [a]\n: b\n", r"s\.yaml:4: is not valid YAML: found unhashable key"),
    ("a: 1\n---\nb: 2\n", r"s\.yaml:2: is not valid YAML: but found another document"),
])
def test_pathological_documents_are_located_errors(text, pattern):
    with pytest.raises(SpecError, match=pattern):
        load_spec_text(text, label="s.yaml")


def test_binary_files_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(SpecError, match=r"s\.yaml: is not UTF-8 text \(byte 0\)"):
        load_spec(path)
    path.write_bytes(b"user: \x00\x01\x02\n")
    with pytest.raises(SpecError, match=r"s\.yaml:1: is not valid YAML: it holds the character U\+0000"):
        load_spec(path)


# --------------------------------------------------------------------------- fuzz
_SCALARS = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                     st.sampled_from(["{instruction}", "U {instruction}", "'", "{x}", "&a", "*a", "!!binary aGk=",
                                      "x" * 5000, "2001-13-45", "<<", "~", "0x1F", "1e999"]))
_FIELDS = st.sampled_from(["system", "user", "assistant", "bos", "variables", "strip", "tools", "reasoning",
                           "system_placement", "stop", "prompt_format", "generation_config", "model_id", "<<",
                           "lora_config", "num_epochs", "not", "tf", "self"])


@st.composite
def hostile_yaml(draw) -> str:
    """YAML text: random fields and values, with anchors, aliases (recursive ones too), merge
    keys, deep nesting, binary bytes and huge strings spliced in."""
    value = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(_FIELDS, inner, max_size=4)), max_leaves=12)
    doc = draw(st.dictionaries(_FIELDS, value, max_size=6))
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    lines = text.splitlines() or ["{}"]
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, len(lines) - 1))
        lines.insert(k, draw(st.sampled_from([
            "anchor: &a {user: 'U {instruction}', more: [*a]}", "b: &b [1, 2]", "c: [*b, *b, *b]", "<<: *b",
            "<<: {system: '{instruction}'}", "d: *undefined", "e: " + "[" * 200 + "]" * 200, "f: \x00\x07",
            "g: '" + "y" * 20000 + "'", "h: !!python/object:os.system x", "i: !!set {a, b}", "? [k]\n: v",
            "variables: {not: a, cycler: b, tf: c, x1: d}", "\ufeffj: 1", "k: &k [&j [*k]]", "\t- tab",
        ])))
    return "\n".join(lines) + "\n"


@FUZZ
@given(hostile_yaml())
def test_fuzzed_specs_end_in_a_spec_error_or_a_spec(text):
    try:
        load_spec_text(text.encode("utf-8"), label="f.yaml")
    except SpecError as exc:
        assert all(p.where.startswith("f.yaml") for p in exc.problems), str(exc)  # every problem located


@FUZZ
@given(hostile_yaml())
def test_fuzzed_configs_end_in_a_config_error_or_a_config(tmp_path_factory, text):
    from tforge_trainer.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "train.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except (ConfigError, SpecError):
        pass


# --------------------------------------------------------------------------- reserved names
@pytest.mark.parametrize("name, why", [
    ("not", "is a Jinja keyword"), ("self", "is a Jinja global"), ("cycler", "is a Jinja global"),
    ("joiner", "is a Jinja global"), ("lipsum", "is a Jinja global"), ("tf", "the compiled template sets itself"),
    ("tf_x", "the compiled template sets itself"), ("message", "the compiled template sets itself"),
    ("pad_token", "transformers passes to the template"), ("tokenize", "apply_chat_template"),
])
def test_reserved_variable_names_are_refused_located(name, why):
    text = BASE + f"variables:\n  ok_name: a\n  {name}: b\n"
    with pytest.raises(SpecError, match=rf"s\.yaml:6, `variables\.{name}`: .*{why}.*Rename the variable, e\.g\. `my_{name}`"):
        load_spec_text(text, label="s.yaml")


def test_reserved_unsupported_switches_are_refused():
    with pytest.raises(SpecError, match=r"`unsupported_variables\.0`: names 'self', which is a Jinja global"):
        load_spec_text(BASE + "unsupported_variables: [self]\n", label="s.yaml")
    assert load_spec_text(BASE + "unsupported_variables: [documents]\n").unsupported_variables == ("documents",)
    with pytest.raises(SpecError) as exc:  # a compiler name is one problem, reported once
        load_spec_text(BASE + "unsupported_variables: [tf_x]\n", label="s.yaml")
    assert len(exc.value.problems) == 1 and "a name the compiled template sets itself" in str(exc.value)


def _stored_names(template: str) -> set[str]:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    ast = _compile_jinja_template(template).environment.parse(template)
    names = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return names | {n.name for n in ast.find_all(nodes.Macro)}


def test_every_name_the_compiler_sets_is_reserved():
    pytest.importorskip("transformers")
    stored = set()
    for name in builtin_names():
        spec = load_builtin(name)
        for training in (False, True):
            stored |= _stored_names(compile_template(spec, training=training)) - {v.name for v in spec.variables}
    assert stored - RESERVED_NAMES == {n for n in stored if n.startswith("tf_")}
    assert "tf" in COMPILER_NAMES


@pytest.mark.parametrize("key", ["list[", "dict[str,any]", "function-after", "str"])
def test_an_unknown_key_that_looks_like_a_pydantic_tag_is_still_named(key):
    with pytest.raises(SpecError, match=rf"s\.yaml:4, `{re.escape(key)}`: unknown field"):
        load_spec_text(BASE + f"{json.dumps(key)}: 1\n", label="s.yaml")
