"""Hand-over of the newest frame of each camera from producers to one worker."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Hashable, Sequence


class LatestFrameMailbox:
    """The newest item of each of ``keys`` (cameras), for one worker.

    ``put`` never blocks (a camera callback must not wait on inference) and replaces the item
    of its key still waiting; the replaced one is counted as dropped. ``take`` hands the worker
    every waiting item at once, one per key, so several cameras go through one forward pass.
    A camera that stops delivering never holds the others up: ``take`` waits for the other
    cameras only while they are live (they delivered within ``live_s``) and at most
    ``gather_s``. ``get`` is the one-camera form.
    """

    def __init__(self, keys: Sequence[Hashable] = (None,)) -> None:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f'mailbox keys must be distinct and at least one, not {keys}')
        self.keys = tuple(keys)
        self._condition = threading.Condition()
        self._items: dict[Hashable, object] = {}
        self._last_put = dict.fromkeys(self.keys, -math.inf)
        self._closed = False
        self.offered_by_key: Counter[Hashable] = Counter()
        self.dropped_by_key: Counter[Hashable] = Counter()

    def put(self, item: object, key: Hashable = None) -> None:
        """Offer the newest item of ``key``; one still waiting is replaced and counted."""
        with self._condition:
            self.offered_by_key[key] += 1
            if key in self._items:
                self.dropped_by_key[key] += 1
            self._items[key] = item
            self._last_put[key] = time.monotonic()
            self._condition.notify()

    def take(self, timeout: float | None = None, gather_s: float = 0.0,
             live_s: float = math.inf) -> dict[Hashable, object]:
        """Every waiting item by key: waits up to ``timeout`` for a first one, then up to
        ``gather_s`` for the other live keys; empty after the timeout or once closed."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._items or self._closed, timeout):
                return {}
            if len(self.keys) > 1 and gather_s > 0:
                self._condition.wait_for(lambda: self._closed or self._all_live_in(live_s),
                                         gather_s)
            items, self._items = self._items, {}
            return items

    def get(self, timeout: float | None = None) -> object | None:
        """The newest item of a one-key mailbox, or None after ``timeout`` or once closed."""
        return self.take(timeout).get(self.keys[0])

    @property
    def offered(self) -> int:
        """Items offered, all keys together."""
        return self.offered_by_key.total()

    @property
    def dropped(self) -> int:
        """Items replaced before the worker took them, all keys together."""
        return self.dropped_by_key.total()

    def open(self) -> None:
        """Let takes wait again after :meth:`close`."""
        with self._condition:
            self._closed = False

    def close(self) -> None:
        """Wake every waiting worker; later takes return at once unless items wait."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _all_live_in(self, live_s: float) -> bool:
        now = time.monotonic()
        return all(key in self._items for key in self.keys
                   if now - self._last_put[key] <= live_s)
