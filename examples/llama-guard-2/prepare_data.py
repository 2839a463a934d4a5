"""Turn labelled conversations into pre-formatted Llama Guard 2 training messages.

Input: JSONL, one record per line (other keys are ignored)::

    {"conversation": [{"role": "user", "content": "..."}, {"role": "assistant", ...}],
     "label": "safe" | "unsafe", "categories": ["S2", "S6"]}

Output: ``OUT_DIR/train.jsonl`` and ``OUT_DIR/valid.jsonl``, one ``{"messages": [...]}`` per
line, three messages each, for the built-in ``verbatim`` prompt format (every message as is,
nothing added)::

    system     "[INST] Task: Check if there is unsafe content in 'User' messages ...
                <BEGIN UNSAFE CONTENT CATEGORIES> ... <BEGIN CONVERSATION> ...
                Provide your safety assessment for ONLY THE LAST User message ... [/INST]"
    user       ""                                  (nothing: the whole prompt is the system text)
    assistant  "safe"  or  "unsafe\\nS2,S6"         (the only trained text)

The system text is Llama Guard 2's prompt byte for byte, as the chat template of
``meta-llama/Meta-Llama-Guard-2-8B`` renders it: its typo ("according our safety policy")
and the space after each category name included. The assessed role is ``User`` when the
conversation ends with the user, ``Agent`` when it ends with the assistant.

Usage::

    python prepare_data.py raw.jsonl -o work/data [--valid-fraction 0.2] [--seed 0]
                           [--check-template llama-guard-2.jinja]

Every problem in the input is reported at once, located (``raw.jsonl:12: ...``), and then
nothing is written. The split is stratified by label and depends only on ``--seed``.

Examples:
    >>> print(assessment("unsafe", ["S6", "S2"]))
    unsafe
    S2,S6
    >>> p = guard_prompt([{"role": "user", "content": " Hi! "}])
    >>> p.startswith("[INST] Task: Check if there is unsafe content in 'User' messages")
    True
    >>> p[p.index("<BEGIN CONVERSATION>"):p.index("<END CONVERSATION>")]
    '<BEGIN CONVERSATION>\\n\\nUser: Hi!\\n\\n'
    >>> p.endswith("comma-separated list of violated categories. [/INST]")
    True
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
from pathlib import Path

#: Llama Guard 2's categories, S1 to S11, named as its prompt names them (the model card's
#: longer names, e.g. "S10: Suicide & Self-Harm", are not what the model was prompted with).
CATEGORIES = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex Crimes",
    "S4": "Child Exploitation", "S5": "Specialized Advice", "S6": "Privacy",
    "S7": "Intellectual Property", "S8": "Indiscriminate Weapons", "S9": "Hate",
    "S10": "Self-Harm", "S11": "Sexual Content",
}
ROLE_NAMES = {"user": "User", "assistant": "Agent"}
LABELS = ("safe", "unsafe")

# Llama Guard 2's prompt, in the pieces its chat template writes. Keep the text as it is:
# the model was trained on exactly these bytes ("according our" and the trailing spaces too).
TASK = ("[INST] Task: Check if there is unsafe content in '{role}' messages in conversations "
        "according our safety policy with the below categories.\n\n")
CATEGORIES_BLOCK = ("<BEGIN UNSAFE CONTENT CATEGORIES>\n"
                    + "".join(f"{code}: {name}. \n" for code, name in CATEGORIES.items())
                    + "<END UNSAFE CONTENT CATEGORIES>\n\n")
INSTRUCTION = ("<END CONVERSATION>\n\n"
               "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
               " - First line must read 'safe' or 'unsafe'.\n"
               " - If unsafe, a second line must include a comma-separated list of violated categories. [/INST]")


class DataError(Exception):
    """Problems in the input file; each line of the message is one located problem."""


def guard_prompt(conversation: list[dict]) -> str:
    """Llama Guard 2's prompt for ``conversation``, assessing its last message's role."""
    role = ROLE_NAMES[conversation[-1]["role"]]
    turns = "".join(f"{ROLE_NAMES[m['role']]}: {m['content'].strip()}\n\n" for m in conversation)
    return (TASK.format(role=role) + CATEGORIES_BLOCK + "<BEGIN CONVERSATION>\n\n" + turns
            + INSTRUCTION.format(role=role))


def assessment(label: str, categories: list[str]) -> str:
    """The target text: ``safe``, or ``unsafe`` and the categories in S1..S11 order."""
    if label == "safe":
        return "safe"
    return "unsafe\n" + ",".join(sorted(set(categories), key=lambda c: int(c[1:])))


def to_messages(record: dict) -> list[dict]:
    """The three verbatim messages of one validated record."""
    return [{"role": "system", "content": guard_prompt(record["conversation"])},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": assessment(record["label"], record.get("categories", []))}]


def check_record(record: object) -> list[str]:
    """What is wrong with one parsed line (an empty list when nothing is)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, found {type(record).__name__}"]
    problems = check_conversation(record.get("conversation"))
    label, categories = record.get("label"), record.get("categories", [])
    if label not in LABELS:
        problems.append(f'label must be "safe" or "unsafe", found {json.dumps(label)}')
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        return problems + [f"categories must be a list of codes like [\"S2\"], found {json.dumps(categories)}"]
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        problems.append(f"unknown category code(s) {', '.join(map(json.dumps, unknown))}: "
                        f"Llama Guard 2 has S1 to S11 ({', '.join(f'{k} {v}' for k, v in CATEGORIES.items())})")
    if label == "unsafe" and not categories:
        problems.append('label "unsafe" needs at least one category, e.g. "categories": ["S2"]')
    if label == "safe" and categories:
        problems.append(f'label "safe" must have no categories, found {json.dumps(categories)}')
    return problems


def check_conversation(conversation: object) -> list[str]:
    """Problems with the messages: Llama Guard 2 needs user/assistant turns, user first."""
    if not isinstance(conversation, list) or not conversation:
        found = "nothing" if conversation is None else json.dumps(conversation)[:60]
        return [f"conversation must be a non-empty list of messages, found {found}"]
    problems = []
    for i, message in enumerate(conversation, start=1):
        expected = "user" if i % 2 else "assistant"
        if not isinstance(message, dict):
            problems.append(f"conversation message {i}: expected an object with role and content")
        elif message.get("role") != expected:
            found = json.dumps(message.get("role"))
            problems.append(f"conversation message {i}: role must be \"{expected}\" (turns alternate, "
                            f"user first, as Llama Guard 2's template requires), found {found}")
        elif not isinstance(message.get("content"), str) or not message["content"].strip():
            problems.append(f"conversation message {i}: content must be a non-empty string, "
                            f"found {json.dumps(message.get('content'))}")
    return problems


def read_records(path: Path) -> list[dict]:
    """Parse and validate every line; raise DataError listing all problems."""
    records, problems = [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            problems += [f"{path.name}:{lineno}: {p}" for p in check_record(record)]
            records.append(record)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError("\n".join(shown) + "\nFix these lines; nothing was written.")
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records


def split(records: list[dict], valid_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the train and valid records: per label, a seeded shuffle, then a cut."""
    rng = random.Random(seed)
    valid = []
    for label in LABELS:
        ids = [i for i, r in enumerate(records) if r["label"] == label]
        rng.shuffle(ids)
        valid += ids[:round(len(ids) * valid_fraction)]
    valid_set = set(valid)
    train = [i for i in range(len(records)) if i not in valid_set]
    if not train or not valid:
        raise DataError(f"--valid-fraction {valid_fraction} leaves {len(train)} train and "
                        f"{len(valid)} valid records out of {len(records)}; both must be at least 1")
    return train, sorted(valid)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` whole or not at all (temp file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; give it a normal file's mode
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_against_template(template_file: Path, records: list[dict]) -> None:
    """Compare every prompt with Llama Guard 2's own chat template (a ``.jinja`` file)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise DataError(f"{template_file}: {message}")

    # The environment transformers renders chat templates in.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(template_file.read_text(encoding="utf-8"))
    for n, record in enumerate(records, start=1):
        ours, theirs = guard_prompt(record["conversation"]), template.render(messages=record["conversation"])
        if ours != theirs:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise DataError(f"record {n}: the prompt differs from {template_file} at character {at}: "
                            f"ours {ours[at:at + 40]!r}, template {theirs[at:at + 40]!r}")
    print(f"all {len(records)} prompts equal {template_file.name} rendered by jinja2, byte for byte")


def summary(records: list[dict], train: list[int], valid: list[int]) -> str:
    labels = collections.Counter(r["label"] for r in records)
    roles = collections.Counter(ROLE_NAMES[r["conversation"][-1]["role"]] for r in records)
    cats = collections.Counter(c for r in records for c in set(r.get("categories", [])))
    cat_text = ", ".join(f"{c} {cats[c]}" for c in CATEGORIES if cats[c])
    return (f"{len(records)} records: {labels['safe']} safe, {labels['unsafe']} unsafe; "
            f"assessing the last User message in {roles['User']}, the last Agent message in {roles['Agent']}\n"
            f"categories: {cat_text}\n"
            f"train {len(train)}, valid {len(valid)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="labelled conversations (JSONL)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for train.jsonl and valid.jsonl")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="share of each label held out [0.2]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split [0]")
    parser.add_argument("--check-template", type=Path, metavar="JINJA",
                        help="also check every prompt against Llama Guard 2's own chat template file")
    args = parser.parse_args(argv)
    try:
        if not 0 < args.valid_fraction < 1:
            raise DataError(f"--valid-fraction must be between 0 and 1 (exclusive), found {args.valid_fraction}")
        records = read_records(args.raw)
        train, valid = split(records, args.valid_fraction, args.seed)
        if args.check_template:
            check_against_template(args.check_template, records)
    except (DataError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("valid", valid)):
        write_jsonl(args.output / f"{name}.jsonl", [{"messages": to_messages(records[i])} for i in ids])
    print(summary(records, train, valid) + f" (seed {args.seed}) -> {args.output}/train.jsonl, valid.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
