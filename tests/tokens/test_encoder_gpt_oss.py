"""gpt-oss conversations (one call per turn, analysis, results named after the call) encode to
the ids and the mask transformers gives with the compiled training template: the o200k
vocabulary is not available offline, so the Llama 3 tokenizer stands in (the harmony markers
are then plain text; ids and mask must still agree)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_encoder_agentic import assert_parity

from template_forge.format.spec import load_builtin

from strategies import agentic_conversations

pytest.importorskip("transformers")


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations(max_calls=1), effort=st.sampled_from(["low", "medium", "high"]))
def test_gpt_oss_ids_and_mask_equal_transformers(real_tokenizer, conv, effort):
    messages, tools = conv
    spec = load_builtin("gpt-oss")
    variables = {"reasoning_effort": effort, "current_date": "2026-03-09"}  # the clock, frozen
    got = assert_parity(spec, real_tokenizer("llama3"), messages, tools, variables)
    if any(m["role"] == "assistant" for m in messages):  # what the model writes is trained
        assert any(got.loss_mask.tolist())
