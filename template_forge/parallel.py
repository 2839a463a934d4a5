"""An ordered, bounded-memory map over worker processes.

Workers are forked, so they inherit the (expensive) tokenizer state of the parent instead of
rebuilding it; at most ``2 × workers`` items are in flight, so a huge input streams through
in constant memory. Where ``fork`` is unavailable, or ``workers <= 1``, items are mapped in
this process. Results come back in input order.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator

_STATE: tuple[Callable[[Any, Any], Any], Any] | None = None


def _call(item: Any) -> Any:
    fn, state = _STATE  # type: ignore[misc]
    return fn(state, item)


@contextlib.contextmanager
def _quiet_fork():
    """Forked children must not use the parent's tokenizers thread pool (it would deadlock);
    saying so up front also silences tokenizers' warning about it."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ordered_map(fn: Callable[[Any, Any], Any], state: Any, items: Iterable[Any], workers: int) -> Iterator[Any]:
    """Yield ``fn(state, item)`` for every item, in order, on ``workers`` processes.

    Examples:
        >>> list(ordered_map(lambda s, x: s * x, 3, range(4), workers=1))
        [0, 3, 6, 9]
    """
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        for item in items:
            yield fn(state, item)
        return
    global _STATE
    _STATE = (fn, state)
    with _quiet_fork():
        pool = mp.get_context("fork").Pool(workers)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(_call, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        _STATE = None
