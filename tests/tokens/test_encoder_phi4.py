"""Phi-4-mini's tool definitions on the system message (``system_key``) encode to the ids and
the mask transformers gives with the compiled training template: prompt, never trained."""

from __future__ import annotations

import pytest
from test_encoder import hf_tokenizer, vocab

from template_forge.format.compiler import compile_template
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

pytest.importorskip("transformers")

CONVERSATIONS = [
    [{"role": "system", "content": "Be brief.", "tools": '[{"name": "get_weather", "parameters": {}}]'},
     {"role": "user", "content": "Weather in Zürich?"}, {"role": "assistant", "content": "Sunny."}],
    [{"role": "system", "content": "", "tools": ""}, {"role": "user", "content": "<|end|> as text"},
     {"role": "assistant", "content": " a "}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "x"}, {"role": "system", "content": "late", "tools": None},
     {"role": "assistant", "content": "y"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_phi4_mini_ids_and_mask_equal_transformers(real_tokenizer, messages):
    spec = load_builtin("phi-4-mini")
    folder = real_tokenizer("llama3")
    out = hf_tokenizer(folder).apply_chat_template(
        messages, chat_template=compile_template(spec, training=True), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    got = Encoder(spec, vocab(folder), parse_special=True).encode({"messages": messages})
    assert got.input_ids.tolist() == out["input_ids"]
    assert got.loss_mask.tolist() == out["assistant_masks"]
