"""Loading specs: the three shapes, strictness, located errors, and a fuzz that only SpecError escapes."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import SpecError
from template_forge.format.formats import builtin_names
from template_forge.format.spec import load_builtin, load_spec, load_spec_text, spec_from_dict

FIELDS = """\
system: "<<SYS>>{instruction}<</SYS>>"
user: "[INST] {system}{instruction} [/INST]"
assistant: " {instruction} </s>"
system_in_user: true
"""


def test_bare_mapping_prompt_format_and_llmforge_config_load_the_same():
    bare = load_spec_text(FIELDS)
    wrapped = load_spec_text("prompt_format:\n" + "".join("  " + l + "\n" for l in FIELDS.splitlines()))
    config = load_spec_text(
        "model_id: meta-llama/Meta-Llama-3-8B\ndeepspeed: {config_path: x.json}\nnum_epochs: 3\n"
        "generation_config:\n  prompt_format:\n" + "".join("    " + l + "\n" for l in FIELDS.splitlines()))
    assert bare == wrapped == config
    assert bare.placement == "first_user"


def test_llmforge_config_can_name_a_builtin():
    spec = load_spec_text("model_id: meta-llama/Meta-Llama-3-8B\nprompt_format: llama3\n")
    assert spec == load_builtin("llama3")


def test_load_spec_takes_a_path_or_a_builtin_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(FIELDS)
    assert load_spec(path).source == str(path)
    assert load_spec("chatml").name == "chatml"
    with pytest.raises(SpecError, match=r"`chatmel` is neither a file nor a built-in format\. Did you mean `chatml`\?"):
        load_spec("chatmel")
    with pytest.raises(SpecError, match=r"missing\.yaml: no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_unknown_key_gets_did_you_mean_with_file_and_line(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(FIELDS + "strip_whitespaces: false\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value)
    assert f"{path}:5, `strip_whitespaces`: unknown field. Did you mean `strip_whitespace`?" in msg


def test_every_problem_is_reported_at_once_with_its_line():
    text = (
        "prompt_format:\n"
        "  system: \"{instruction}\"\n"
        "  user: \"{instruction} {sytem}\"\n"      # line 3: unknown field, did-you-mean
        "  assistant: 'A'\n"                       # line 4: no {instruction}
        "  bos: 1\n"                               # line 5: wrong type
        "  trailng_assistant: ''\n"                # line 6: unknown key
    )
    with pytest.raises(SpecError) as info:
        load_spec_text(text, label="my.yaml")
    msg = str(info.value)
    assert "problems in the prompt format" in msg
    assert "my.yaml:5, `prompt_format.bos`: expected a string (quote it in YAML), found int 1." in msg
    assert "my.yaml:6, `prompt_format.trailng_assistant`: unknown field. Did you mean `trailing_assistant`?" in msg


def test_role_problems_are_reported_together():
    text = "system: '{instruction}'\nuser: '{instruction} {sytem}'\nassistant: 'A'\n"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, label="r.yaml")
    msg = str(info.value)
    # `{system}` is not allowed in `user` here (no system_in_user), so it is not suggested.
    assert "r.yaml:2, `user`: has the unknown field `{sytem}`. Did you mean" not in msg
    assert "r.yaml:2, `user`: has the unknown field `{sytem}`." in msg
    assert "r.yaml:3, `assistant`: must contain `{instruction}` exactly once, but it is missing. Found 'A'." in msg


@pytest.mark.parametrize("fields,pattern", [
    (dict(user="{instruction}", assistant="{instruction}"), r"`system`: is required but missing"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", system_in_user=True),
     r"`user`: must contain `\{system\}` exactly once, but it is missing"),
    (dict(system="{instruction}", user="{system}{instruction}", assistant="{instruction}"),
     r"`user`: contains `\{system\}` but the system text is not placed in user turns"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", system_in_last_user=True),
     r"`system_in_last_user`: is true but `system_in_user` is false"),
    (dict(system="{instruction}", user="{system}{instruction}", assistant="{instruction}", system_in_user=False,
          system_placement="first_user"), r"`system_placement`: is `first_user` but `system_in_user` is false"),
    (dict(system="{instruction}", user="{instruction}{instruction}", assistant="{instruction}"),
     r"`user`: must contain `\{instruction\}` exactly once, but it appears 2 times"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction!r}"),
     r"`assistant`: has the field `\{instruction!r\}`; only plain `\{name\}` fields"),
    (dict(system="{instruction}", user="{instruction} }", assistant="{instruction}"),
     r"`user`: is not a valid format string \(Single '\}' encountered"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", strip={"user": "with_system"}),
     r"`strip.user`: is `with_system` but the system text is not placed in user turns"),
    (dict(system="{instruction}", user="{system} {instruction}", assistant="{instruction}", system_in_user=True,
          strip={"user": "with_system"}), r"`user` must contain `\{system\}\{instruction\}` side by side"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", variables={"messages": "x"}),
     r"`variables.messages`: is a name transformers passes to the template"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", system_placement="top"),
     r"`system_placement`: expected 'separate', 'in_place', 'first_user'"),
    (dict(system="{instruction}", user="{instruction}", assistant="{instruction}", strip={"usr": True}),
     r"`strip.usr`: unknown field\. Did you mean `user`\?"),
])
def test_invalid_specs_are_explained(fields, pattern):
    with pytest.raises(SpecError, match=pattern):
        spec_from_dict(fields)


def test_literal_braces_and_variables():
    spec = spec_from_dict(dict(system="{{x}} {date_string} {instruction}", user="{instruction}",
                               assistant="{instruction}", variables={"date_string": "26 Jul 2024"}))
    assert [p.field or p.text for p in spec.system.pieces] == ["{x} ", "date_string", " ", "instruction"]


def test_duplicate_keys_do_not_pass_silently():
    text = "system: '{instruction}'\nuser: '{instruction}'\nassistant: '{instruction}'\nuser: 'U {instruction}'\n"
    with pytest.raises(SpecError, match=r"d\.yaml:4, `user`: is written twice"):
        load_spec_text(text, label="d.yaml")


@pytest.mark.parametrize("text,pattern", [
    ("user: [unclosed", r"<string>:1: is not valid YAML"),
    ("- a\n- b\n", r"expected a mapping of prompt-format fields, found list"),
    ("", r"expected a mapping of prompt-format fields, found NoneType"),
    (b"\xff\xfe user: x", r"is not UTF-8 text"),
    ("prompt_format: {user: '{instruction}'}\nnmae: x\n", r"`nmae`: unknown top-level key\. Did you mean `name`\?"),
    ("model_id: x\nnum_epochs: 1\n", r"this llmforge config has no prompt format"),
])
def test_unreadable_documents(text, pattern):
    with pytest.raises(SpecError, match=pattern):
        load_spec_text(text)


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_loads_and_names_its_models(name):
    spec = load_builtin(name)
    assert spec.name == name and spec.description
    assert name == "verbatim" or spec.models


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                    st.just("{instruction}"), st.just("{system}{instruction}"), st.text("{}x", max_size=6),
                    st.just("x" * 100_000))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
field_names = st.sampled_from(["system", "user", "assistant", "bos", "trailing_assistant", "system_in_user",
                               "system_in_last_user", "strip_whitespace", "default_system_message", "strip",
                               "system_placement", "empty_system", "variables", "final_suffix",
                               "require_alternation", "prompt_format", "generation_config", "model_id", "bogus"])


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.dictionaries(field_names, values, max_size=8),
    values,
    st.binary(max_size=200),
    st.text(max_size=200),
))
def test_fuzz_malformed_specs_raise_only_spec_error(doc):
    if isinstance(doc, (bytes, str)):
        loader, arg = load_spec_text, doc
    else:
        loader, arg = load_spec_text, yaml.safe_dump(doc, allow_unicode=True)
    try:
        loader(arg)
    except SpecError as exc:
        assert str(exc)
