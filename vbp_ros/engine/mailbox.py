"""A single-slot hand-over of the newest item from a producer to one worker."""

from __future__ import annotations

import threading


class LatestFrameMailbox:
    """A single-slot hand-over between a producer and one worker: the worker always gets the
    newest item; an item replaced before the worker took it is counted as dropped.

    ``put`` never blocks (a camera callback must not wait on inference); ``get`` blocks until an
    item arrives, the timeout passes (returns None) or the mailbox is closed (returns None).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: object = None
        self._full = False
        self._closed = False
        self.offered = 0
        self.dropped = 0

    def put(self, item: object) -> None:
        """Offer the newest item; one still waiting is replaced and counted as dropped."""
        with self._condition:
            self.offered += 1
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._condition.notify()

    def get(self, timeout: float | None = None) -> object | None:
        """The newest item, or None after ``timeout`` seconds or once closed."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting ``get``; later ones return None at once unless an item waits."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
