"""Token ids of the Mistral built-ins with tools equal mistral-common's own encoders
(``MistralTokenizer.encode_chat_completion``) on generated conversations with tool
definitions, parallel tool calls and results, on tokenizers converted offline from
mistral-common's files: SentencePiece v3 with ``mistral-v3-common`` (and ``mistral-v3``,
where the official template agrees with the encoder), Tekken with ``mistral-small-3.2``.

Where the official templates and the encoder disagree, a test pins the disagreement
(templates/README.md lists them); the ``-common`` formats follow the encoder.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.render import render
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import encode

from strategies import agentic_conversations

pytest.importorskip("mistral_common")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
EXAMPLES = int(os.environ.get("TFORGE_EXAMPLES", "25"))
_cache: dict = {}


# ---------------------------------------------------------------- mistral-common's side
def vendor_tokenizer(name: str, *, version: str | None = None):
    """mistral-common's MistralTokenizer for a file of REAL_TOKENIZERS; a Tekken file can be
    read as a later instruct ``version`` (the shipped ones say v3; Small 3.x files say v7 / v11)."""
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from conftest import REAL_TOKENIZERS, _vendor_file

    key = (name, version)
    if key not in _cache:
        path = _vendor_file(*REAL_TOKENIZERS[name][:2])
        if version is not None:
            path = _retagged(path, version)
        _cache[key] = {mode: MistralTokenizer.from_file(str(path), mode=mode)
                       for mode in (ValidationMode.finetuning, ValidationMode.test)}
    return _cache[key]


def _retagged(path, version: str):
    """A copy of a Tekken file whose config says ``version`` (v11 adds [ARGS] and [CALL_ID]
    after the default special tokens, at ranks 20 and 21)."""
    import tempfile
    from pathlib import Path

    from template_forge.tokens.convert import TEKKEN_DEFAULT_SPECIALS

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data["config"]["version"] = version
    if version not in ("v3", "v7"):
        names = list(TEKKEN_DEFAULT_SPECIALS) + ["[ARGS]", "[CALL_ID]"]
        data["special_tokens"] = [{"rank": r, "token_str": t, "is_control": True} for r, t in enumerate(names)]
    out = Path(tempfile.mkdtemp()) / f"tekken-{version}.json"
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def vendor_ids(tokenizers, messages, tools):
    """mistral-common's ids (None where it refuses the conversation)."""
    from mistral_common.exceptions import MistralCommonException
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode

    mode = ValidationMode.finetuning if messages[-1]["role"] == "assistant" else ValidationMode.test
    try:
        request = ChatCompletionRequest.from_openai(messages=[_openai(m) for m in messages], tools=tools)
        return tokenizers[mode].encode_chat_completion(request).tokens
    except (MistralCommonException, ValueError, AssertionError):
        return None


def _openai(m: dict) -> dict:
    m = dict(m)
    if m.get("tool_calls"):
        m["tool_calls"] = [{**c, "function": {**c["function"], "arguments": c["function"]["arguments"]
                            if isinstance(c["function"]["arguments"], str) else json.dumps(c["function"]["arguments"])}}
                           for c in m["tool_calls"]]
    return m


vendor_text = st.text(st.sampled_from(list("abc xyz.,!?'\"\\\n0129éß日🙂<>[]{}|_")), min_size=1,
                      max_size=24).map(str.strip).filter(bool)


@st.composite
def vendor_agentic_conversations(draw, *, content_with_calls: bool = False, system: bool | None = None):
    """agentic_conversations on the domain mistral-common takes: stripped, non-empty texts;
    an assistant turn with calls has no content (unless ``content_with_calls``)."""
    messages, tools = draw(agentic_conversations(reasoning=False))
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["content"] = draw(vendor_text) if content_with_calls and draw(st.booleans()) else ""
        else:
            m["content"] = draw(vendor_text)
        out.append(m)
    if system is not None and (out[0]["role"] == "system") != system:
        out = [{"role": "system", "content": draw(vendor_text)}] + out if system else out[1:]
    return out, tools


def object_arguments(messages: list[dict]) -> list[dict]:
    """The same conversation with every call's arguments as an object (JSON strings parsed)."""
    def call(c):
        args = c["function"]["arguments"]
        return {**c, "function": {**c["function"], "arguments": json.loads(args) if isinstance(args, str) else args}}

    return [{**m, "tool_calls": [call(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m for m in messages]


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def canonical_arguments(messages: list[dict], data) -> list[dict]:
    """Each call's arguments as an object or as the JSON string mistral-common would write
    (``json.dumps(..., ensure_ascii=False)``): the domain where `arguments: as_given` is exact."""
    def call(c):
        args = c["function"]["arguments"]
        if data.draw(st.booleans(), label="as a string"):
            args = json.dumps(args, ensure_ascii=False)
        return {**c, "function": {**c["function"], "arguments": args}}

    return [{**m, "tool_calls": [call(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m
            for m in object_arguments(messages)]


def without_calls(messages: list[dict]) -> list[dict]:
    """The conversation without its tool-call turns and results."""
    return [m for m in messages if not m.get("tool_calls") and m["role"] != "tool"]


def distinct_users(messages: list[dict]) -> bool:
    """No earlier user message equals the last one (the official templates compare messages)."""
    users = [m for m in messages if m["role"] == "user"]
    return all(m != users[-1] for m in users[:-1])


@pytest.fixture(scope="session")
def tekken(real_tokenizer, tmp_path_factory):
    """``tekken(version)`` → (our converted tokenizer folder, mistral-common's tokenizers) for
    the shipped Tekken file read as instruct ``version``."""
    from template_forge.tokens import convert

    from conftest import REAL_TOKENIZERS, _vendor_file

    folders = {"v7": real_tokenizer("tekken")}  # the file's own special tokens serve v7

    def get(version: str):
        if version not in folders:
            retagged = _retagged(_vendor_file(*REAL_TOKENIZERS["tekken"][:2]), version)
            folders[version] = convert.save(convert.from_tekken(retagged), tmp_path_factory.mktemp(f"tekken-{version}"))
        return folders[version], vendor_tokenizer("tekken", version=version)

    return get


def ours(name: str, folder, messages, tools):
    try:
        render(load_builtin(name), messages, tools=tools)
    except RenderError:
        return None
    return encode(load_builtin(name), folder, {"messages": messages, "tools": tools}).input_ids.tolist()


VENDOR = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- equal on the encoder's domain
@VENDOR
@given(conv=vendor_agentic_conversations(), data=st.data())
def test_mistral_v3_common_equals_mistral_common_v3(real_tokenizer, conv, data):
    """Definitions, parallel calls and results, system text before the last user turn: the
    ids of mistral-common's InstructTokenizerV3 (SentencePiece v3). Its domain: arguments as
    objects or canonical JSON strings, result contents that are not JSON texts."""
    messages, tools = conv
    messages = canonical_arguments(messages, data)
    assume(not any(m["role"] == "tool" and is_json(m["content"]) for m in messages))
    vendor = vendor_ids(vendor_tokenizer("mistral-v3"), messages, tools)
    assume(vendor is not None)
    assert ours("mistral-v3-common", real_tokenizer("mistral-v3"), messages, tools) == vendor


@VENDOR
@given(conv=vendor_agentic_conversations(), data=st.data())
def test_mistral_nemo_common_equals_mistral_common_tekken_v3(real_tokenizer, conv, data):
    """The same on Mistral Nemo's own Tekken file (InstructTokenizerV3, no dummy prefix)."""
    messages, tools = conv
    messages = canonical_arguments(messages, data)
    assume(not any(m["role"] == "tool" and is_json(m["content"]) for m in messages))
    vendor = vendor_ids(vendor_tokenizer("tekken-nemo"), messages, tools)
    assume(vendor is not None)
    assert ours("mistral-nemo-common", real_tokenizer("tekken-nemo"), messages, tools) == vendor


@VENDOR
@given(conv=vendor_agentic_conversations(system=True))
def test_mistral_small_3_2_equals_mistral_common_tekken_v11(tekken, conv):
    """The official Mistral Small 3.2 template and mistral-common's InstructTokenizerV11 on a
    Tekken vocabulary ([TOOL_CALLS]name[CALL_ID]id[ARGS]json, results by call id): equal for
    conversations with their own system message (mistral-common has no default), arguments
    as objects (the template writes a string as a JSON string) and no earlier user message
    equal to the last one (the template gives each of those the definitions)."""
    messages, tools = conv
    messages = object_arguments(messages)
    assume(distinct_users(messages))
    folder, vendor = tekken("v11")
    expected = vendor_ids(vendor, messages, tools)
    assume(expected is not None)
    assert ours("mistral-small-3.2", folder, messages, tools) == expected


@VENDOR
@given(conv=vendor_agentic_conversations(system=True))
def test_mistral_small_3_2_equals_mistral_common_tekken_v7_without_calls(tekken, conv):
    """InstructTokenizerV7 writes calls as one JSON list (as Mistral Small 3.1 does), the
    3.2 template does not; without calls (definitions and turns only) the two agree."""
    messages, tools = conv
    messages = without_calls(messages)
    assume(distinct_users(messages))
    folder, vendor = tekken("v7")
    expected = vendor_ids(vendor, messages, tools)
    assume(expected is not None)
    assert ours("mistral-small-3.2", folder, messages, tools) == expected


@VENDOR
@given(conv=vendor_agentic_conversations(content_with_calls=True), data=st.data())
def test_mistral_small_3_2_common_equals_mistral_common_tekken_v11(tekken, conv, data):
    """`mistral-small-3.2-common` follows the encoder where the template departs from it: no
    default system message, content before the calls, the definitions at the last user turn
    only, arguments as objects or canonical JSON strings."""
    messages, tools = conv
    messages = canonical_arguments(messages, data)
    folder, vendor = tekken("v11")
    expected = vendor_ids(vendor, messages, tools)
    assume(expected is not None)
    assert ours("mistral-small-3.2-common", folder, messages, tools) == expected
