"""The compiled chat template renders exactly what render() renders, under transformers."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template, jinja_literal
from template_forge.format.formats import builtin_names
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import TRICKY, conversations, spec_dicts

transformers_utils = pytest.importorskip("transformers.utils.chat_template_utils")


def hf_render(template: str, messages, *, add_generation_prompt: bool, training: bool, **kwargs):
    """transformers' own renderer (what apply_chat_template calls): text, generation spans."""
    out, indices = transformers_utils.render_jinja_template(
        conversations=[messages], chat_template=template, add_generation_prompt=add_generation_prompt,
        return_assistant_tokens_mask=training, **kwargs)
    spans = [tuple(x) for x in indices[0] if x[0] != x[1]] if training else None
    return out[0], spans


def merged(spans):
    out = []
    for s, e in spans:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def assert_same(spec, messages, gen: bool, variables=None):
    """render() and the compiled template agree: same text, same trained spans, or both refuse."""
    kwargs = dict(variables or {})
    try:
        expected = render(spec, messages, add_generation_prompt=gen, variables=variables)
    except RenderError:
        expected = None
    for training in (False, True):
        template = compile_template(spec, training=training)
        try:
            text, spans = hf_render(template, messages, add_generation_prompt=gen, training=training, **kwargs)
        except jinja2.TemplateError as exc:
            assert expected is None, f"compiled template raised {exc} but render() gave {expected.text!r}"
            continue
        assert expected is not None, f"render() raised but the compiled template gave {text!r}"
        assert text == expected.text
        if training:
            assert merged(spans) == expected.trained_spans()


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec_dicts(), st.one_of(conversations(system="anywhere", min_turns=0), conversations(system="many", min_turns=0)),
       st.booleans(), st.data())
def test_compiled_equals_render_for_generated_specs(d, messages, gen, data):
    spec = spec_from_dict(d)
    variables = None
    if spec.variables and data.draw(st.booleans()):
        variables = {spec.variables[0].name: data.draw(st.sampled_from(TRICKY))}
    assert_same(spec, messages, gen, variables)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("name", builtin_names())
@given(messages=conversations(system="maybe"), gen=st.booleans())
def test_compiled_builtin_equals_render(name, messages, gen):
    assert_same(load_builtin(name), messages, gen)


@pytest.mark.parametrize("bad", [
    [{"role": "tool", "content": "x"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": {"parts": 1}}],
    [{"content": "no role"}],
    [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}, {"role": "system", "content": "c"}],
])
def test_compiled_template_refuses_what_render_refuses(bad):
    spec = load_builtin("llmforge-llama3")
    with pytest.raises(RenderError):
        render(spec, bad)
    with pytest.raises(jinja2.TemplateError):
        hf_render(compile_template(spec), bad, add_generation_prompt=False, training=False)


@pytest.mark.parametrize("text", TRICKY + ["{{ role }}", "a\\'b", "\\u0041", "\\\\", "'''", "{% generation %}"])
def test_jinja_literal_round_trips(text):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    assert env.from_string("{{ " + jinja_literal(text) + " }}").render() == text


def test_llama_guard_style_braces_in_spec_come_out_literally():
    spec = spec_from_dict({
        "system": "Task: check {{{{ role }}}} messages {{% if %}}\n{instruction}",
        "user": "{{{instruction}}}", "assistant": "'{instruction}'\\", "strip_whitespace": False,
    })
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    text, _ = hf_render(compile_template(spec), msgs, add_generation_prompt=False, training=False)
    assert text == "Task: check {{ role }} messages {% if %}\nS{U}'A'\\"


@pytest.mark.parametrize("trim_blocks", [False, True])
@pytest.mark.parametrize("name", ["llama3.1", "llama2", "mistral-v3", "phi3"])
def test_output_is_immune_to_trim_and_lstrip_blocks(name, trim_blocks):
    spec = load_builtin(name)
    msgs = [{"role": "system", "content": " s "}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    env = ImmutableSandboxedEnvironment(trim_blocks=trim_blocks, lstrip_blocks=trim_blocks)
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(jinja2.TemplateError(m))
    out = env.from_string(compile_template(spec)).render(messages=msgs, add_generation_prompt=False)
    assert out == render(spec, msgs).text


def test_inference_flavour_has_no_custom_tags_and_training_has_generation():
    spec = load_builtin("llama3")
    inference, training = compile_template(spec), compile_template(spec, training=True)
    assert "{%- generation" not in inference and "endgeneration" not in inference
    assert training.count("{%- generation -%}") == 1
    # The header stays outside the generation span; content and <|eot_id|> are inside.
    assert "{%- generation -%}{{- (message['content'] | trim) ~ '<|eot_id|>' -}}{%- endgeneration -%}" in training


def test_variables_default_and_override_through_transformers():
    spec = load_builtin("llama3.1")
    msgs = [{"role": "user", "content": "Hi"}]
    text, _ = hf_render(compile_template(spec), msgs, add_generation_prompt=True, training=False)
    assert "Today Date: 26 Jul 2024\n\n" in text
    text, _ = hf_render(compile_template(spec), msgs, add_generation_prompt=True, training=False,
                        date_string="01 Jan 2026")
    assert text == render(spec, msgs, add_generation_prompt=True, variables={"date_string": "01 Jan 2026"}).text
    assert "Today Date: 01 Jan 2026\n\n" in text


@pytest.mark.parametrize("name", builtin_names())
def test_compiled_builtins_match_goldens(name, update_goldens):
    """Compiler output is pinned; `pytest --update-goldens` rewrites fixtures/compiled/."""
    from conftest import FIXTURES

    for training in (False, True):
        path = FIXTURES / "compiled" / f"{name}{'.training' if training else ''}.jinja"
        got = compile_template(load_builtin(name), training=training)
        if update_goldens:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(got, encoding="utf-8")
        assert path.is_file(), f"missing golden {path}; run pytest --update-goldens"
        assert got == path.read_text(encoding="utf-8")
