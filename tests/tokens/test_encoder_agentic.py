"""Agentic conversations (tool definitions, calls, results, reasoning) encode to the ids and
the mask transformers gives with the compiled training template and ``tools=``: a
whole-string tokenization, the mask from ``{% generation %}``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_encoder import hf_tokenizer, vocab

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

from strategies import agentic_conversations

pytest.importorskip("transformers")

SWITCHES = {"qwen3": {"enable_thinking": [True, False]}, "gemma-4": {"enable_thinking": [True, False]},
            "deepseek-v3.1": {"thinking": [True, False]},
            "llama3.2": {"date_string": ["09 Mar 2026"]}}  # its clock, set: both sides read the same date


@pytest.mark.parametrize("name", ["llama3.1", "qwen2.5", "qwen3", "gemma-4", "hermes-3", "deepseek-v3.1", "llama3.2",
                                  "granite-4.0"])
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations(), data=st.data())
def test_agentic_ids_and_mask_equal_transformers(real_tokenizer, name, conv, data):
    messages, tools = conv
    spec = load_builtin(name)
    variables = {k: data.draw(st.sampled_from(v)) for k, v in SWITCHES.get(name, {}).items()}
    assert_parity(spec, real_tokenizer("llama3"), messages, tools, variables)


def assert_parity(spec, folder, messages, tools, variables):
    """Ids and mask of a record equal transformers' tokenization of the compiled training
    template with ``return_assistant_tokens_mask`` (conversations the format refuses are skipped)."""
    try:
        render(spec, messages, tools=tools, variables=variables)
    except RenderError:
        assume(False)
    out = hf_tokenizer(folder).apply_chat_template(
        messages, tools=tools, chat_template=compile_template(spec, training=True), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True, **variables)
    got = Encoder(spec, vocab(folder), parse_special=True, variables=variables).encode(
        {"messages": messages, "tools": tools})
    assert got.input_ids.tolist() == out["input_ids"]
    assert got.loss_mask.tolist() == out["assistant_masks"]
    return got
