"""Render a chat template tforge did not write (a tokenizer's, a ``.jinja`` file) under limits.

A template from the Hub is code: Jinja's sandbox stops it reaching Python internals, but
not from looping for hours (``range(100000)`` inside ``range(100000)``), allocating
gigabytes (``'x' * 10**10``, folded as a constant while the template *compiles*), recursing
until the interpreter gives up, or raising any exception class. So compiling, inspecting
and rendering all happen in one worker process (forked: it starts in milliseconds and
inherits the imports), which runs with its address space capped (``RLIMIT_AS``) and is
killed when a render runs too long. The worker renders through transformers'
``render_jinja_template`` — the same ``ImmutableSandboxedEnvironment``, globals and
``generation`` extension as ``apply_chat_template`` — so the text is byte-identical.

Every failure comes back as data (a render's exception, ``"ZeroDivisionError: division by
zero"``) or as a :class:`~template_forge.errors.DataError` naming the job that was running
(a timeout, a worker killed for memory or by a crash).

Limits (per call; pass :class:`Limits` to change them): :data:`TIME_LIMIT_S` per render or
compile, :data:`TOTAL_TIME_LIMIT_S` for all of them, :data:`MEMORY_LIMIT_BYTES` of address
space on top of what the worker starts with, :data:`MAX_OUTPUT_CHARS` per rendered text and
:data:`MAX_TEMPLATE_CHARS` of template source.

Examples:
    >>> with TemplateSandbox("{{ messages[0]['content'] * 2 }}{{ 1 / 0 if add_generation_prompt }}") as box:
    ...     box.render([Job("a", [{"role": "user", "content": "hi"}]),
    ...                 Job("b", [{"role": "user", "content": "hi"}], add_generation_prompt=True)])
    [Outcome(text='hihi', error=None), Outcome(text=None, error='ZeroDivisionError: division by zero')]
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from template_forge.errors import DataError, TemplateForgeError

#: One render (or the compile) may take this long; a real chat template takes milliseconds.
TIME_LIMIT_S = 10.0
#: Every render of one sandbox together (``tforge check`` renders 400 by default).
TOTAL_TIME_LIMIT_S = 120.0
#: Address space the worker may allocate beyond what it starts with.
MEMORY_LIMIT_BYTES = 1 << 30
#: A rendered text longer than this is refused (sample conversations render to a few KB).
MAX_OUTPUT_CHARS = 1_000_000
#: A template longer than this is refused before compiling (the largest on the Hub are ~40 KB).
MAX_TEMPLATE_CHARS = 1_000_000
#: How much of an exception's message comes back.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Limits:
    """What one :class:`TemplateSandbox` may spend."""

    time_s: float = TIME_LIMIT_S
    total_time_s: float = TOTAL_TIME_LIMIT_S
    memory_bytes: int = MEMORY_LIMIT_BYTES
    output_chars: int = MAX_OUTPUT_CHARS


def _default_limits() -> Limits:
    # read when a sandbox starts, so that the module's limits can be changed (tests do)
    return Limits(TIME_LIMIT_S, TOTAL_TIME_LIMIT_S, MEMORY_LIMIT_BYTES, MAX_OUTPUT_CHARS)


@dataclass(frozen=True)
class Job:
    """One render: ``label`` names it in errors (``sample 3 (plain, with generation prompt)``)."""

    label: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = False


@dataclass(frozen=True)
class Outcome:
    """A render's text, or what the template raised (``"TypeError: ..."``)."""

    text: str | None
    error: str | None = None


@dataclass(frozen=True)
class Compiled:
    """The compiled template's source tree facts: what it reads (see ``check.TemplateInfo``)."""

    reads: frozenset[str] = field(default_factory=frozenset)


def _hf():
    try:
        from transformers.utils import chat_template_utils
    except ImportError:
        raise TemplateForgeError(
            "checking against a chat template needs transformers' renderer: pip install transformers") from None
    return chat_template_utils


_MISSING = object()


@contextmanager
def frozen_clock(template: str, now: datetime) -> Iterator[None]:
    """``strftime_now`` reads ``now`` while the block runs, for this template only.

    transformers compiles each template once (cached) into an environment of its own and
    defines ``strftime_now`` as a global there; a name set on the compiled template's own
    globals shadows it, and is removed again afterwards, so nothing leaks into later renders
    (the compiled template is shared: do not render it from another thread meanwhile).
    """
    compiled = _hf()._compile_jinja_template(template)
    own = compiled.globals.maps[0] if hasattr(compiled.globals, "maps") else compiled.globals
    saved = own.get("strftime_now", _MISSING)
    own["strftime_now"] = lambda fmt: now.strftime(fmt)
    try:
        yield
    finally:
        if saved is _MISSING:
            own.pop("strftime_now", None)
        else:
            own["strftime_now"] = saved


# --------------------------------------------------------------------------- the worker
def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError):
        text = "MemoryError: it went past the sandbox's memory limit"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _cap_memory(extra: int) -> None:
    """Cap the address space at what the process maps now plus ``extra`` bytes."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = mapped + extra if hard == resource.RLIM_INFINITY else min(mapped + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no RLIMIT_AS (macOS): the time limit still holds


def _compile(template: str) -> tuple:
    """("ok", reads) | ("syntax", line, message) | ("error", "Type: message")."""
    import jinja2
    from jinja2 import meta, nodes

    try:
        compiled = _hf()._compile_jinja_template(template)
        ast = compiled.environment.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return ("syntax", exc.lineno, str(exc.message)[:MAX_ERROR_CHARS])
    except Exception as exc:  # noqa: BLE001 (constant folding runs template code: anything can come out)
        return ("error", _short(exc))
    reads = set(meta.find_undeclared_variables(ast))
    reads |= {n.attr for n in ast.find_all(nodes.Getattr)}
    reads |= {n.value for n in ast.find_all(nodes.Const) if isinstance(n.value, str)}
    return ("ok", frozenset(reads))


def _render_one(hf, template: str, job: Job, kwargs: Mapping[str, Any], output_chars: int) -> Outcome:
    try:
        (text,), _ = hf.render_jinja_template(conversations=[job.messages], tools=job.tools, chat_template=template,
                                             add_generation_prompt=job.add_generation_prompt, **kwargs)
    except Exception as exc:  # noqa: BLE001 (any exception a template raises is its answer for this job)
        return Outcome(None, _short(exc))
    if len(text) > output_chars:
        return Outcome(None, f"OutputTooLong: it wrote {len(text)} characters, more than the limit of {output_chars}")
    return Outcome(text)


def _serve(conn, template: str, limits: Limits) -> None:
    """The worker's loop: compile once, then answer render requests until told to stop."""
    _cap_memory(limits.memory_bytes)
    hf = _hf()
    conn.send(_compile(template))
    while True:
        request = conn.recv()
        if request is None:
            return
        jobs, kwargs, now = request
        clock = frozen_clock(template, now) if now is not None else _no_clock()
        with clock:
            for job in jobs:
                conn.send(_render_one(hf, template, job, kwargs, limits.output_chars))


@contextmanager
def _no_clock() -> Iterator[None]:
    yield


def _worker_main(conn, template: str, limits: Limits) -> None:
    # Leave without tracebacks, atexit handlers or flushing stdio buffers copied from the
    # parent at fork time: whatever went wrong, the parent reports it from the exit status.
    code = 0
    try:
        _serve(conn, template, limits)
    except BaseException:  # noqa: BLE001 (the parent sees the missing answer)
        code = 3
    finally:
        os._exit(code)


# --------------------------------------------------------------------------- the parent
def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class TemplateSandbox:
    """A worker process holding one compiled template; use it as a context manager.

    Raises:
        DataError: the template is too long, not valid Jinja, or its compile raises, runs
            past the time limit or kills the worker; a render does the latter two (the
            error names the job).
    """

    def __init__(self, template: str, *, where: str = "<template>", limits: Limits | None = None):
        if len(template) > MAX_TEMPLATE_CHARS:
            raise DataError(f"{where}: the chat template is {len(template)} characters long, more than "
                            f"{MAX_TEMPLATE_CHARS}. Is this the right file?")
        self.template, self.where = template, where
        self.limits = limits or _default_limits()
        self._spent = 0.0
        _hf()  # imported here, before the fork, so that the worker inherits it
        for stream in (sys.stdout, sys.stderr):  # a forked child must not inherit unwritten output
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        ctx = _context()
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child, template, self.limits), daemon=True)
        self._proc.start()
        child.close()
        try:
            self.compiled = self._compiled(self._receive("compiling the chat template"))
        except BaseException:
            self.close()
            raise

    def _compiled(self, answer: tuple) -> Compiled:
        if answer[0] == "syntax":
            _, line, message = answer
            lines = self.template.splitlines()
            shown = f":\n  {lines[line - 1][:200]}" if 0 < line <= len(lines) else "."
            raise DataError(f"{self.where}:{line}: the chat template is not valid Jinja ({message}){shown}")
        if answer[0] == "error":
            raise DataError(f"{self.where}: the chat template cannot be compiled ({answer[1]}). Fix the template.")
        return Compiled(answer[1])

    def _receive(self, doing: str):
        """The worker's next answer, waiting at most the time limits; ``doing`` names the job."""
        wait = min(self.limits.time_s, self.limits.total_time_s - self._spent)
        start = time.monotonic()
        ready = self._conn.poll(max(wait, 0.0))
        self._spent += time.monotonic() - start
        if not ready:
            self._proc.kill()
            self.close()
            over = ("took more than " f"{self.limits.time_s:g} s" if wait == self.limits.time_s
                    else f"ran past {self.limits.total_time_s:g} s for all renders together")
            raise DataError(f"{self.where}: {doing}: the chat template {over} (a loop that never ends or is far "
                            "too large?); tforge stopped it. Fix the template.")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(1.0)
            self.close()
            raise DataError(f"{self.where}: {doing}: the chat template stopped the renderer ({self._death()}). "
                            "Fix the template.") from None

    def _death(self) -> str:
        code = self._proc.exitcode
        if code in (-9, 3):
            return (f"it ran out of memory: the limit is {self.limits.memory_bytes / (1 << 30):g} GiB"
                    if code == 3 else "killed, most likely for using too much memory")
        return f"the worker crashed, exit status {code}"

    def render(self, jobs: list[Job], *, kwargs: Mapping[str, Any] | None = None,
               now: datetime | None = None) -> list[Outcome]:
        """Render every job (in the worker, in order); ``kwargs`` go to the template as
        ``apply_chat_template`` passes them, ``now`` freezes ``strftime_now``."""
        self._conn.send((jobs, dict(kwargs or {}), now))
        return [self._receive(job.label) for job in jobs]

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._proc.join(0.2)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def __enter__(self) -> TemplateSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_untrusted(template: str, jobs: list[Job], *, kwargs: Mapping[str, Any] | None = None,
                     now: datetime | None = None, where: str = "<template>",
                     limits: Limits | None = None) -> list[Outcome]:
    """Render ``template`` on each job under :class:`Limits`, in one worker process.

    Examples:
        >>> render_untrusted("{{ bos_token }}{{ messages | length }}", [Job("one", [])], kwargs={"bos_token": "<s>"})
        [Outcome(text='<s>0', error=None)]
    """
    with TemplateSandbox(template, where=where, limits=limits) as box:
        return box.render(jobs, kwargs=kwargs, now=now)
