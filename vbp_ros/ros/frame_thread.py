"""A thread of its own for a node's camera subscriptions and its /diagnostics, outside the
executor.

Measured on this 2-core machine (640x480 rgb8 at 120 Hz into a subscriber that only counts):
rclpy's MultiThreadedExecutor took 41 ms of CPU per frame and answered 206 of 960 frames (its
main thread rebuilds the wait set in Python while the pool takes the message); a
SingleThreadedExecutor took 1.9 ms and missed none, but it runs every callback of the node, so
a parameter change that builds a new model there (seconds) would hold the frames and the
diagnostics. Here the camera subscriptions belong to a callback group that no executor runs
(:class:`OwnThreadGroup`); one thread waits on them alone, takes each message the moment it
arrives and hands it on, and publishes the periodic status in between. The executor (a
SingleThreadedExecutor: services, lifecycle transitions, parameter changes) may block as long
as a build takes without delaying a frame.

The wait set is rclpy's own (the one ``rclpy.wait_for_message`` uses), rebuilt whenever the
subscriptions change: the executor's thread subscribes and unsubscribes, and wakes this thread
with a guard condition so that it never waits on a destroyed subscription.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription

Deliver = Callable[[str, object], None]  # (key, message)


class OwnThreadGroup(CallbackGroup):
    """The callback group of entities that a :class:`FrameThread` serves: no executor runs
    them."""

    def can_execute(self, entity: object) -> bool:
        """Never, for an executor."""
        return False

    def beginning_execution(self, entity: object) -> bool:
        """Never, for an executor."""
        return False

    def ending_execution(self, entity: object) -> None:
        """Nothing began."""


class FrameThread:
    """Serves subscriptions of ``node`` on a thread of its own and calls ``tick`` every
    ``period_s`` seconds on it, from :meth:`start` to :meth:`stop`.

    Each message goes to ``deliver(key, message)`` as soon as it is taken: keep it short (a
    mailbox put). ``tick`` runs between messages.
    """

    def __init__(self, node: Node, deliver: Deliver, tick: Callable[[], None],
                 period_s: float) -> None:
        self._node = node
        self._deliver = deliver
        self._tick = tick
        self._period_s = period_s
        self._group = OwnThreadGroup()
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._wake = GuardCondition(None, None, context=node.context)
        self._running = False
        self._thread: threading.Thread | None = None

    def subscribe(self, key: str, message_type: type, topic: str, qos: QoSProfile) -> None:
        """Subscribe ``topic`` for ``key`` (replacing its earlier subscription)."""
        subscription = self._node.create_subscription(message_type, topic, _never_called, qos,
                                                      callback_group=self._group)
        self._replace(key, subscription)

    def unsubscribe(self, key: str) -> None:
        """Stop taking ``key``'s messages."""
        self._replace(key, None)

    def topic(self, key: str) -> str | None:
        """The resolved topic of ``key``'s subscription, if it has one."""
        subscription = self._subscriptions.get(key)
        return subscription.topic_name if subscription is not None else None

    def start(self) -> None:
        """Start the thread."""
        self._running = True
        self._thread = threading.Thread(target=self._run, name='vbp_frames', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after the message or tick in hand) and unsubscribe everything."""
        self._running = False
        self._wake.trigger()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for key in list(self._subscriptions):
            self.unsubscribe(key)
        self._wake.destroy()

    def _replace(self, key: str, subscription: Subscription | None) -> None:
        with self._lock:
            old = self._subscriptions.pop(key, None)
            if subscription is not None:
                self._subscriptions[key] = subscription
        if old is None and subscription is None:
            return
        if old is not None:  # destroyed once this thread's wait lets go of it
            self._node.destroy_subscription(old)
        self._wake.trigger()

    def _run(self) -> None:
        due = time.monotonic()
        while self._running:
            now = time.monotonic()
            if now >= due:
                self._tick()
                due = max(due + self._period_s, now)
            self._serve(due - time.monotonic())

    def _serve(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for messages and deliver every one that has arrived."""
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        context = self._node.context
        with ExitStack() as held:
            held.enter_context(context.handle)
            wait_set = _rclpy.WaitSet(len(subscriptions), 1, 0, 0, 0, 0, context.handle)
            for _, subscription in subscriptions:
                held.enter_context(subscription.handle)
                wait_set.add_subscription(subscription.handle)
            held.enter_context(self._wake.handle)
            wait_set.add_guard_condition(self._wake.handle)
            wait_set.wait(max(0, int(timeout_s * 1e9)))
            ready = wait_set.get_ready_entities('subscription')
            for key, subscription in subscriptions:
                if subscription.handle.pointer in ready:
                    self._take_all(key, subscription)

    def _take_all(self, key: str, subscription: Subscription) -> None:
        while self._running:
            taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
            if taken is None:
                return
            self._deliver(key, taken[0])


def _never_called(message: object) -> None:
    """The callback of a subscription that a FrameThread serves (no executor calls it)."""
