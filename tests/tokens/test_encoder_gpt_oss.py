"""gpt-oss conversations (one call per turn, analysis, results named after the call) encode to
the ids and the mask transformers gives with the compiled training template: the o200k
vocabulary is not available offline, so the Llama 3 tokenizer stands in (the harmony markers
are then plain text; ids and mask must still agree)."""

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


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations(max_calls=1), effort=st.sampled_from(["low", "medium", "high"]))
def test_gpt_oss_ids_and_mask_equal_transformers(real_tokenizer, conv, effort):
    messages, tools = conv
    spec = load_builtin("gpt-oss")
    variables = {"reasoning_effort": effort, "current_date": "2026-03-09"}  # the clock, frozen
    try:
        render(spec, messages, tools=tools, variables=variables)
    except RenderError:
        assume(False)
    folder = real_tokenizer("llama3")
    out = hf_tokenizer(folder).apply_chat_template(
        messages, tools=tools, chat_template=compile_template(spec, training=True), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True, **variables)
    got = Encoder(spec, vocab(folder), parse_special=True, variables=variables).encode(
        {"messages": messages, "tools": tools})
    assert got.input_ids.tolist() == out["input_ids"]
    assert got.loss_mask.tolist() == out["assistant_masks"]
    assert any(got.loss_mask.tolist())
