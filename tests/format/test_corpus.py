"""Corpus conformance: our specs in ``fixtures/corpus/`` against the official chat templates.

For every spec in ``fixtures/corpus/<template>.yaml`` we render generated conversations with
(a) :func:`template_forge.format.render.render` and (b) the official Jinja template from the shared
conformance corpus through transformers' own renderer (``render_jinja_template``), and require
the same text, or an error on both sides (jinja2 ``TemplateError`` / our ``RenderError``).

The conversation domain (see ``fixtures/corpus/README.md``):

* an optional system message at index 0 only (absent, empty, or with content);
* then 1-6 user/assistant messages, alternating and starting with user, ending with either role;
* contents drawn from plain words, whitespace-padded text (leading/trailing spaces, tabs,
  newlines, and single interior newlines or CR-LFs), empty strings, unicode (including
  non-breaking and line-separator spaces), braces, Jinja-looking text and token-like text;
  no content has a blank line ("\n\n") inside or a "</think>";
* with and without ``add_generation_prompt``.

Cases come from a deterministic seeded generator: all 36 shapes (1-6 turns x no/empty/non-empty
system x generation prompt or not), then random shapes up to CASES_PER_TEMPLATE per template.

Templates that cannot be expressed exactly are ``xfail(strict=True)``: the test still proves the
mismatch exists. Templates that are exact only on a sub-domain get a passing test on that
sub-domain and a strict-xfail test on a case just outside it.
"""

from __future__ import annotations

import datetime as _datetime
import json
import random
from functools import lru_cache

import pytest

from template_forge.errors import RenderError
from template_forge.format.render import render
from template_forge.format.spec import load_spec

from conftest import CONFORMANCE as CORPUS
from conftest import FIXTURES

SPECS = FIXTURES / "corpus"

if not CORPUS.is_dir():
    pytest.skip(
        f"conformance corpus not found at {CORPUS} (it is vendors' data kept outside the repo); "
        "corpus tests need it", allow_module_level=True)

ctu = pytest.importorskip(
    "transformers.utils.chat_template_utils",
    reason="transformers is needed to render the official templates (pip install -e .[test])")
jinja2 = pytest.importorskip("jinja2")

DATE_STRING = "26 Jul 2024"
FROZEN_NOW = _datetime.datetime(2024, 7, 26, 12, 0, 0)
CASES_PER_TEMPLATE = 120

MANIFEST = {e["name"]: e for e in json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))["entries"]}
NAMES = sorted(p.stem for p in SPECS.glob("*.yaml"))


# --------------------------------------------------------------------------- known differences
#: Not exact on the domain: the whole-domain test is a strict xfail.
INEXACT = {
    "falcon3-instruct": (
        "the official template drops the '\\n' after <|endoftext|> for the last message only; a spec cannot "
        "special-case the final assistant turn (final_suffix can only append)"),
}

#: Exact only on a sub-domain of the domain: (predicate on (messages, add_generation_prompt), description).
SUBDOMAIN = {
    "falcon3-instruct": (lambda msgs, gen: msgs[-1]["role"] == "user", "conversations that end with a user message"),
}

#: Exact on the domain, but only because the domain leaves something out: one case just outside it
#: each, checked as a strict xfail. (messages, add_generation_prompt, frozen "now", reason)
_U = lambda c: {"role": "user", "content": c}  # noqa: E731
_A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
_S = lambda c: {"role": "system", "content": c}  # noqa: E731
_THINK = ("assistant history is cut to the text after '</think>' by the official template",
          [_U("Hi"), _A("<think>reasoning</think>Hello."), _U("Again")])
_DATE = ("the default system message embeds strftime_now('%B %d, %Y'); the spec's is fixed at July 26, 2024",
         [_U("Hi")])
BOUNDARY = {
    "falcon-7b-instruct/blank-line": (
        [_U("para one\n\npara two")], True, FROZEN_NOW,
        "the official template rewrites '\\n\\n' -> '\\n' inside message text"),
    "deepseek-r1/think": (_THINK[1], True, FROZEN_NOW, _THINK[0]),
    "deepseek-r1-distill-llama-8b/think": (_THINK[1], True, FROZEN_NOW, _THINK[0]),
    "granite-3.1-instruct/other-day": (_DATE[1], True, _datetime.datetime(2025, 1, 2), _DATE[0]),
    "granite-3.2-instruct/other-day": (_DATE[1], True, _datetime.datetime(2025, 1, 2), _DATE[0]),
    "granite-3.3-instruct/other-day": (_DATE[1], True, _datetime.datetime(2025, 1, 2), _DATE[0]),
}


# --------------------------------------------------------------------------- frozen clock
class _FrozenDatetime(_datetime.datetime):
    now_value = FROZEN_NOW

    @classmethod
    def now(cls, tz=None):  # noqa: ARG003 - signature of datetime.now
        return cls.now_value


@pytest.fixture(scope="module", autouse=True)
def frozen_clock():
    """Freeze ``strftime_now()`` (Granite 3.1-3.3, Llama 3.2 without date_string).

    transformers defines ``strftime_now`` inside the lru_cached compile function as
    ``datetime.now().strftime(fmt)``; ``datetime`` is looked up in the module's globals at call
    time, so patching the module attribute freezes templates compiled before or after this.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctu, "datetime", _FrozenDatetime)
        yield _FrozenDatetime


# --------------------------------------------------------------------------- the domain
_WORDS = ["hello", "world", "What is 2+2?", "Be brief.", "ok", "naïve", "über", "x"]
_POOL = [
    "Hello!", "hello world", "  padded  ", " leading", "trailing ", "\n\ttabs and newlines\n ", "\n", " ",
    "", "", "two\nlines", "  two\nlines padded\t",
    "héllo wörld ✓", "日本語のテキスト", "emoji 🙂🚀", "Ω≈ç√∫",
    "{braces}", "{}", "}{", "{{x}}", "{instruction}", "{system}", "{date_string}",
    "{{ x }}", "{% if %}", "{% if x %}y{% endif %}", "{# comment #}", "{{ messages[0]['content'] }}",
    "{% raw %}r{% endraw %}", "  {{ bos_token }}  ",
    # other line breaks, invisible characters, quotes and token-like text
    "\r\n", "\r", "line\r\nbreak", "\u2028x\u2029", "a\u00a0b", " \u00a0nbsp\u00a0 ", "\x00\x1f", "'\"\\", "\\n",
    "<|eot_id|>", "[INST]", "</s>", "<s>",
]


def _content(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return rng.choice(_POOL)
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5)))


def _conversation(rng: random.Random, turns: int, system: str) -> list[dict]:
    msgs = []
    if system == "empty":
        msgs.append({"role": "system", "content": ""})
    elif system == "text":
        msgs.append({"role": "system", "content": _content(rng) or "You are a helpful assistant."})
    for i in range(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": _content(rng)})
    return msgs


def domain_cases(seed: str, n: int = CASES_PER_TEMPLATE) -> list[tuple[list[dict], bool]]:
    """Deterministic: every shape once, then random shapes, contents from a seeded RNG."""
    rng = random.Random(seed)
    shapes = [(t, s, g) for t in range(1, 7) for s in ("none", "empty", "text") for g in (False, True)]
    while len(shapes) < n:
        shapes.append((rng.randint(1, 6), rng.choice(("none", "empty", "text")), rng.random() < 0.5))
    return [(_conversation(rng, t, s), g) for t, s, g in shapes]


# --------------------------------------------------------------------------- rendering both ways
@lru_cache(maxsize=None)
def _spec(name: str):
    return load_spec(SPECS / f"{name}.yaml")


@lru_cache(maxsize=None)
def _template(name: str) -> str:
    # Bytes, not read_text(): universal newlines would turn a CR-LF inside the template into "\n".
    return (CORPUS / "templates" / f"{name}.jinja").read_bytes().decode("utf-8")


def _tokens(name: str) -> dict[str, str]:
    entry = MANIFEST[name]
    return {k: entry[k] for k in ("bos_token", "eos_token") if entry.get(k) is not None}


def official(name: str, messages: list[dict], gen: bool, **kwargs):
    """The official template's text, or the jinja2 TemplateError it raised."""
    kwargs = {"date_string": DATE_STRING, **kwargs}
    if kwargs["date_string"] is None:
        del kwargs["date_string"]
    try:
        texts, _ = ctu.render_jinja_template(
            conversations=[messages], chat_template=_template(name), add_generation_prompt=gen,
            **_tokens(name), **kwargs)
    except jinja2.exceptions.TemplateError as exc:
        return exc
    return texts[0]


def ours(name: str, messages: list[dict], gen: bool, **kwargs):
    """Our reference rendering, or the RenderError it raised."""
    try:
        return render(_spec(name), messages, add_generation_prompt=gen, **kwargs).text
    except RenderError as exc:
        return exc


def _agree(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return isinstance(a, jinja2.exceptions.TemplateError) and isinstance(b, RenderError)
    return a == b


def _assert_all_agree(name: str, cases) -> None:
    bad = []
    for msgs, gen in cases:
        a, b = official(name, msgs, gen), ours(name, msgs, gen)
        if not _agree(a, b):
            bad.append((msgs, gen, a, b))
    if bad:
        msgs, gen, a, b = min(bad, key=lambda x: len(json.dumps(x[0])))
        pytest.fail(
            f"{name}: {len(bad)} of {len(cases)} cases differ; shortest:\n"
            f"  messages = {json.dumps(msgs, ensure_ascii=False)}\n  add_generation_prompt = {gen}\n"
            f"  official = {a!r}\n  ours     = {b!r}", pytrace=False)


def _mark(name: str):
    if name in INEXACT:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=INEXACT[name]))
    return name


# --------------------------------------------------------------------------- tests
def test_one_spec_per_corpus_spec():
    corpus = sorted(p.stem for p in (CORPUS / "specs").glob("*.yaml"))
    assert NAMES == corpus, "fixtures/corpus/ must hold exactly one spec per template with a corpus spec"
    assert len(NAMES) == 45
    for name in NAMES:
        spec = _spec(name)
        assert spec.name == name
        assert spec.description and spec.models, f"{name}: description and models are required"


def test_clock_is_frozen():
    texts, _ = ctu.render_jinja_template(
        conversations=[[{"role": "user", "content": "x"}]], chat_template="{{ strftime_now('%Y-%m-%d') }}")
    assert texts == ["2024-07-26"]


@pytest.mark.parametrize("name", [_mark(n) for n in NAMES])
def test_matches_official_template(name):
    """Same text (or an error on both sides) on the whole conversation domain."""
    _assert_all_agree(name, domain_cases(name))


@pytest.mark.parametrize("name", sorted(SUBDOMAIN))
def test_matches_official_template_on_subdomain(name):
    keep, _ = SUBDOMAIN[name]
    cases = [c for c in domain_cases(name + "/sub", 4 * CASES_PER_TEMPLATE) if keep(*c)]
    assert len(cases) >= CASES_PER_TEMPLATE // 2
    _assert_all_agree(name, cases)


@pytest.mark.parametrize("case", [
    pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=v[3])) for k, v in sorted(BOUNDARY.items())])
def test_outside_the_domain_differs(case, frozen_clock):
    """Each stated sub-domain limit is real: one case just outside it differs."""
    name = case.split("/")[0]
    msgs, gen, now, _ = BOUNDARY[case]
    old = frozen_clock.now_value
    frozen_clock.now_value = now
    try:
        _assert_all_agree(name, [(msgs, gen)])
    finally:
        frozen_clock.now_value = old


_NON_ALTERNATING = [
    [_U("a"), _U("b")],
    [_A("a"), _U("b")],
    [_S("s"), _A("a"), _U("b")],
    [_U("a"), _A("b"), _A("c")],
    [_S(" s "), _U("a"), _U("b"), _A("c")],
]


@pytest.mark.parametrize("name", NAMES)
def test_non_alternating_roles_raise_alike(name):
    """Beyond the domain: roles that do not alternate raise on both sides, or render the same."""
    keep = SUBDOMAIN.get(name, (lambda msgs, gen: True, ""))[0]
    _assert_all_agree(name, [(m, g) for m in _NON_ALTERNATING for g in (False, True) if keep(m, g)])


@pytest.mark.parametrize("name", NAMES)
def test_goldens(name):
    """The stored transformers renders (golden/*.json) agree with our render, within the known limits."""
    golden = json.loads((CORPUS / "golden" / f"{name}.json").read_text(encoding="utf-8"))
    keep = SUBDOMAIN.get(name, (lambda msgs, gen: True, ""))[0]
    checked = 0
    for case_name, case in golden["cases"].items():
        msgs, gen = case["messages"], case["add_generation_prompt"]
        if not keep(msgs, gen):
            continue
        got = ours(name, msgs, gen)
        if "error" in case:
            assert isinstance(got, RenderError), f"{case_name}: official raised {case['error']!r}, we rendered"
        else:
            assert got == case["rendered"], f"{case_name}"
        checked += 1
    assert checked


@pytest.mark.parametrize("name", ["llama-3.1-instruct", "llama-3.2-instruct", "llama-3.3-instruct"])
def test_llama_date_is_the_date_string_variable(name, frozen_clock):
    """Another date_string renders the same through the spec's `date_string` variable; Llama 3.2
    without date_string takes today's date (strftime_now), which the variable reproduces too."""
    msgs = [_S(" Be brief. "), _U("Hi")]
    assert official(name, msgs, True, date_string="02 Jan 2025") == ours(
        name, msgs, True, variables={"date_string": "02 Jan 2025"})
    old = frozen_clock.now_value
    frozen_clock.now_value = _datetime.datetime(2025, 1, 2)
    try:
        today = "02 Jan 2025" if name == "llama-3.2-instruct" else DATE_STRING
        assert official(name, msgs, True, date_string=None) == ours(name, msgs, True, variables={"date_string": today})
    finally:
        frozen_clock.now_value = old
