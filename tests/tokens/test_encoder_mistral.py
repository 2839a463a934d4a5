"""The Mistral built-ins with tools encode to the ids and the mask transformers gives with the
compiled training template and ``tools=``, on Mistral's own vocabularies converted offline
(SentencePiece v3 for mistral-v3, Tekken for mistral-nemo and mistral-small-3.2)."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from test_encoder_agentic import assert_parity

from template_forge.format.spec import load_builtin

from strategies import agentic_conversations

pytest.importorskip("transformers")
TOKENIZER = {"mistral-v3": "mistral-v3", "mistral-v3-common": "mistral-v3", "mistral-nemo": "tekken-nemo",
             "mistral-nemo-common": "tekken-nemo", "mistral-small-3.2": "tekken", "mistral-small-3.2-common": "tekken"}


@pytest.mark.parametrize("name", sorted(TOKENIZER))
@settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", "15")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations(reasoning=False))
def test_mistral_ids_and_mask_equal_transformers(real_tokenizer, name, conv):
    messages, tools = conv
    spec = load_builtin(name)
    today = datetime.now().strftime("%Y-%m-%d")  # the clock, read once for both sides
    variables = {"today": today} if any(v.name == "today" for v in spec.variables) else {}
    assert_parity(spec, real_tokenizer(TOKENIZER[name]), messages, tools, variables)
