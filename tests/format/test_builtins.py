"""Every built-in format reproduces its vendor's official chat template, byte for byte.

Checked on generated conversations (not the ones the specs were written from): an
optional system message first (including empty and whitespace-padded ones), then one
or more user/assistant messages in any order, with every kind of awkward content,
with and without the generation prompt. Where the official template refuses a
conversation (roles that do not alternate, a system message Gemma does not support),
ours refuses it too. Both the reference renderer and the compiled template (both
flavours) are compared with the official template under transformers' renderer.
"""

from __future__ import annotations

import datetime as dt

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import render
from template_forge.format.spec import load_builtin

from conftest import frozen_clock, official
from strategies import conversations

hf = pytest.importorskip("transformers.utils.chat_template_utils")

#: built-in → the official template (../shared/conformance/templates/<name>.jinja) it reproduces.
OFFICIAL = {
    "llama2": "llama-2-chat",
    "llama3": "llama-3-instruct",
    "llama3.1": "llama-3.1-instruct",
    "llama3.2": "llama-3.2-instruct",
    "mistral-v1": "mistral-7b-instruct-v0.1",
    "mistral-v3": "mistral-7b-instruct-v0.3",
    "mistral-nemo": "mistral-nemo-instruct-2407",
    "chatml": "chatml",
    "qwen2.5": "qwen2.5-instruct",
    "zephyr": "zephyr-7b-beta",
    "gemma": "gemma-2-it",
    "phi3": "phi-3-mini-4k-instruct",
    "deepseek-v3": "deepseek-v3",
    "deepseek-r1": "deepseek-r1",
    "vicuna": "vicuna-v1.1",
    "alpaca": "alpaca",
}
#: Byte-identical official templates that the same built-in therefore also reproduces.
ALSO = {"llama3.1": ["llama-3.3-instruct"], "mistral-v1": ["mistral-7b-instruct-v0.2", "mixtral-8x7b-instruct-v0.1"],
        "gemma": ["gemma-it"], "qwen2.5": []}
#: Built-ins that are llmforge's own formats or have no official template.
NOT_VENDOR = {"verbatim", "llmforge-llama2", "llmforge-mistral", "llmforge-llama3"}
NOT_VENDOR.add("llama3.1-models")  # llama_models' ChatFormat, no HF template (tests/tokens/test_vendor_llama.py)
NOT_VENDOR.add("llama-4-models")  # the same for Llama 4 (against the HF template where they agree: test_llama4.py)
#: Built-ins that follow a vendor's own encoder where it departs from the official template
#: (token parity with the encoder is tested in tests/tokens/test_encoder.py).
VENDOR_ENCODER = {"mistral-v3-common": "mistral-7b-instruct-v0.3", "mistral-nemo-common": "mistral-nemo-instruct-2407"}
#: The same, for official templates in modern/ (token parity in tests/tokens/test_vendor_mistral.py).
VENDOR_ENCODER_MODERN = {"mistral-small-3.2-common"}
#: Built-ins whose official template is in ../shared/conformance/modern/ (tests/format/test_agentic_builtins.py).
MODERN = {"qwen3", "gpt-oss", "gemma-4", "hermes-3", "deepseek-v3.1", "granite-4.0", "phi-4-mini",
          "mistral-small-3.2", "llama-4"}


def test_every_builtin_is_classified():
    assert set(builtin_names()) == set(OFFICIAL) | NOT_VENDOR | set(VENDOR_ENCODER) | MODERN | VENDOR_ENCODER_MODERN


#: Llama 3.2 reads today's date (strftime_now): frozen at the date the official templates are given
NOW = dt.datetime(2024, 7, 26, 12, 0)


@pytest.fixture(scope="module", autouse=True)
def _frozen_clock():
    with frozen_clock(NOW):
        yield


def official_render(template: str, entry: dict, messages, gen: bool) -> str | None:
    try:
        out, _ = hf.render_jinja_template(
            conversations=[messages], chat_template=template, add_generation_prompt=gen,
            bos_token=entry["bos_token"], eos_token=entry["eos_token"], date_string="26 Jul 2024")
    except jinja2.TemplateError:
        return None
    return out[0]


def ours(template_or_spec, messages, gen: bool, *, compiled: bool) -> str | None:
    if compiled:
        try:
            out, _ = hf.render_jinja_template(conversations=[messages], chat_template=template_or_spec,
                                              add_generation_prompt=gen)
        except jinja2.TemplateError:
            return None
        return out[0]
    try:
        return render(template_or_spec, messages, add_generation_prompt=gen, now=NOW).text
    except RenderError:
        return None


@pytest.mark.parametrize("name", sorted(OFFICIAL))
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(system="maybe", min_turns=1, max_turns=6), gen=st.booleans())
def test_builtin_matches_official_template(conformance, name, messages, gen):
    spec = load_builtin(name)
    compiled = [compile_template(spec), compile_template(spec, training=True)]
    for target in [OFFICIAL[name]] + ALSO.get(name, []):
        template, entry = official(conformance, target)
        expected = official_render(template, entry, messages, gen)
        assert ours(spec, messages, gen, compiled=False) == expected, target
        for tmpl in compiled:
            assert ours(tmpl, messages, gen, compiled=True) == expected, target


#: Built-ins whose official template renders every system message where it stands.
IN_PLACE = ["chatml", "llama3", "phi3", "qwen2.5", "zephyr"]


def test_in_place_builtins_are_the_ones_declaring_it():
    assert IN_PLACE == sorted(n for n in OFFICIAL if load_builtin(n).placement == "in_place")


@pytest.mark.parametrize("name", IN_PLACE)
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(system="many", min_turns=1, max_turns=6), gen=st.booleans())
def test_in_place_builtin_matches_official_with_system_messages_anywhere(conformance, name, messages, gen):
    """Zero to three system messages, anywhere: these templates accept them all."""
    spec = load_builtin(name)
    template, entry = official(conformance, OFFICIAL[name])
    expected = official_render(template, entry, messages, gen)
    assert expected is not None
    assert ours(spec, messages, gen, compiled=False) == expected
    assert ours(compile_template(spec, training=True), messages, gen, compiled=True) == expected


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_builtin_reproduces_corpus_goldens(conformance, name):
    import json

    golden = json.loads((conformance / "golden" / f"{OFFICIAL[name]}.json").read_text())
    spec = load_builtin(name)
    for case in golden["cases"].values():
        got = ours(spec, case["messages"], case["add_generation_prompt"], compiled=False)
        assert got == case.get("rendered"), case


def test_gemma_refuses_a_system_message_like_the_official_template(conformance):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    template, entry = official(conformance, "gemma-2-it")
    assert official_render(template, entry, msgs, False) is None
    with pytest.raises(RenderError, match="does not support a system message"):
        render(load_builtin("gemma"), msgs)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=conversations(system="maybe", alternate=True), data=st.data())
def test_vendor_encoder_formats_equal_the_official_template_for_prompts(conformance, messages, data):
    """mistral-v3-common differs from the official template only for conversations that end
    with an assistant turn: for a prompt (ending with the user), the two are the same."""
    for name, official_name in VENDOR_ENCODER.items():
        template, entry = official(conformance, official_name)
        while messages and messages[-1]["role"] != "user":
            messages = messages[:-1]
        want = official_render(template, entry, messages, True)
        try:
            got = render(load_builtin(name), messages, add_generation_prompt=True).text
        except RenderError:
            got = None
        assert got == want
