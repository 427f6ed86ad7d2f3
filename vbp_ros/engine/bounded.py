"""Work that must not hold its caller: a model build (which may read a FIFO, load a user's
code or compile for seconds) runs in a daemon thread of its own, and the caller waits for it at
most a bounded time, or until it is told to stop. Work left behind is abandoned: the caller has
its answer, the thread may finish (its result is then discarded) or never finish, and as a
daemon it never keeps the process alive at exit."""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar('T')
POLL_S = 0.1  # how often a waiting caller asks whether it should stop


class Abandoned(ValueError):
    """The work did not finish in time, or the caller was told to stop; the reason is the
    message."""


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.result: T | None = None
        self.error: BaseException | None = None


def run_bounded(work: Callable[[], T], timeout_s: float, what: str,
                stopping: Callable[[], bool] = lambda: False,
                discard: Callable[[T], None] = lambda result: None) -> T:
    """``work()``'s result, or its exception, once it returns within ``timeout_s`` seconds.

    Raises :class:`Abandoned` (naming ``what``) when it takes longer, or as soon as
    ``stopping()`` says so (polled every :data:`POLL_S`); a result that comes after that is
    handed to ``discard`` (e.g. to close an engine nobody took).
    """
    outcome: _Outcome[T] = _Outcome()

    def target() -> None:
        try:
            outcome.result = work()
        except BaseException as error:  # handed to the caller, whatever it is
            outcome.error = error
        with outcome.lock:
            outcome.done.set()
            late = outcome.abandoned
        if late and outcome.error is None:
            discard(outcome.result)

    threading.Thread(target=target, name='vbp_build', daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not outcome.done.wait(max(0.0, min(POLL_S, deadline - time.monotonic()))):
        reason = ('stopping' if stopping() else
                  f'not done within {timeout_s:g} s' if time.monotonic() >= deadline else None)
        if reason is None:
            continue
        with outcome.lock:
            if not outcome.done.is_set():
                outcome.abandoned = True
                raise Abandoned(f'{what}: {reason}; abandoned')
    if outcome.error is not None:
        raise outcome.error
    return outcome.result
