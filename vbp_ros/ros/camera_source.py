"""The camera subscriptions of vbp_node as the pipeline's frame source: the worker takes the
newest frame of each camera straight from DDS when it is free, outside the executor.

Measured on this 2-core machine (640x480 rgb8 at 120 Hz into a subscriber that only counts):
rclpy's MultiThreadedExecutor took 41 ms of CPU per frame and answered 206 of 960 frames (its
main thread rebuilds the wait set in Python while the pool takes the message); a
SingleThreadedExecutor took 1.9 ms and missed none, but it runs every callback of the node, so
a parameter change that builds a new model there (seconds) would hold the frames up. A thread
that took every message as it arrived and handed it on kept the executor out of the way, but
under overload it spent its CPU taking (copying twice) frames that were then superseded: with
1920x1080 frames at 180 Hz the node answered 39 frames a second, against 60 at 60 Hz.

So the subscriptions belong to a callback group that no executor runs
(:class:`OwnThreadGroup`), keep one frame each (KEEP_LAST 1: DDS itself replaces a frame that
waits, without taking it), and the pipeline's worker takes what waits when it is ready for
the next frames (:meth:`CameraSource.take`). Frames replaced in DDS are counted from the gaps
in each publisher's sequence numbers, as superseded: every frame that reached the node is
answered or counted (from a publisher's second frame taken on: before its first one, nothing
tells which of its frames were meant for this subscription).

The wait set is rclpy's own (the one ``rclpy.wait_for_message`` uses), rebuilt at every wait
from the current subscriptions; the executor's thread subscribes and unsubscribes, and wakes a
waiting worker with a guard condition, so that no wait holds a destroyed subscription.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import ExitStack
from dataclasses import replace

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image

from ..engine.pipeline import Arrival
from .image_cdr import image_from_cdr


class OwnThreadGroup(CallbackGroup):
    """The callback group of entities served by a thread of their own: no executor runs
    them."""

    def can_execute(self, entity: object) -> bool:
        """Never, for an executor."""
        return False

    def beginning_execution(self, entity: object) -> bool:
        """Never, for an executor."""
        return False

    def ending_execution(self, entity: object) -> None:
        """Nothing began."""


class CameraSource:
    """The cameras of ``node`` as a :class:`~vbp_ros.engine.pipeline.FrameSource`: one
    subscription each (:meth:`subscribe`), taken by :meth:`take` in the worker's thread."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._group = OwnThreadGroup()
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._wake = GuardCondition(None, None, context=node.context)
        self._closed = True
        self._drained = True  # since the last close, the frames then waiting were taken
        self._last_sequence: dict[tuple[str, bytes], int] = {}  # (camera, publisher): number
        self._last_frame: dict[str, float] = {}  # camera: monotonic time of its newest
        self.offered = 0  # frames that reached the node: taken, or replaced while waiting
        self.dropped = 0  # replaced by a newer frame before they were taken

    def subscribe(self, camera: str, message_type: type, topic: str, qos: QoSProfile) -> None:
        """Subscribe ``topic`` for ``camera`` (replacing its earlier subscription); only the
        newest frame waits (KEEP_LAST 1, whatever ``qos``'s depth)."""
        qos = QoSProfile(history=qos.history, depth=1, reliability=qos.reliability,
                         durability=qos.durability)
        subscription = self._node.create_subscription(message_type, topic, _never_called, qos,
                                                      callback_group=self._group,
                                                      raw=message_type is Image)
        self._replace(camera, subscription)

    def unsubscribe(self, camera: str) -> None:
        """Stop taking ``camera``'s frames."""
        self._replace(camera, None)

    def reliable_topics(self) -> list[str]:
        """The resolved topics of the subscriptions that are reliable, sorted."""
        return sorted(subscription.topic_name for subscription in self._subscriptions.values()
                      if subscription.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE)

    def publishers(self) -> int:
        """How many publishers the subscribed cameras' topics have, together."""
        with self._lock:
            topics = [subscription.topic_name for subscription in self._subscriptions.values()]
        return sum(self._node.count_publishers(topic) for topic in topics)

    def topic(self, camera: str) -> str | None:
        """The resolved topic of ``camera``'s subscription, if it has one."""
        subscription = self._subscriptions.get(camera)
        return subscription.topic_name if subscription is not None else None

    def open(self) -> None:
        """Let :meth:`take` wait for frames again."""
        self._closed = self._drained = False

    def close(self) -> None:
        """Wake a waiting :meth:`take`; takes return at once until :meth:`open`, the first
        of them with the frames then waiting (the worker answers them before it stops)."""
        self._closed = True
        self._wake.trigger()

    def destroy(self) -> None:
        """Unsubscribe everything and let go of the guard condition (no take may run)."""
        for camera in list(self._subscriptions):
            self.unsubscribe(camera)
        self._wake.destroy()

    def take(self, timeout: float | None = None, gather_s: float = 0.0,
             live_s: float = math.inf) -> dict[str, Arrival]:
        """The newest frame of every camera that has one, waiting up to ``timeout`` seconds
        for a first one, then up to ``gather_s`` for the other cameras that delivered within
        ``live_s`` (several cameras, one batch); empty after the timeout; once closed, the
        frames waiting then, once, and nothing after."""
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        arrivals: dict[str, Arrival] = {}
        while not self._closed:
            waiting = self._waiting(arrivals)
            first = not arrivals
            arrivals.update(self._wait_and_take(waiting, deadline - time.monotonic()))
            now = time.monotonic()
            if first and arrivals:
                if not gather_s or len(waiting) < 2:
                    return arrivals
                deadline = now + gather_s
            live = {camera for camera, last in self._last_frame.items() if now - last <= live_s}
            if (arrivals and live <= set(arrivals)) or now >= deadline:
                return arrivals
        if not arrivals and not self._drained:
            self._drained = True
            arrivals = self._wait_and_take(self._waiting(arrivals), 0.0)
        return arrivals

    def _waiting(self, arrivals: dict[str, Arrival]) -> dict[str, Subscription]:
        """The subscriptions of the cameras not among ``arrivals``."""
        with self._lock:
            return {camera: subscription for camera, subscription
                    in self._subscriptions.items() if camera not in arrivals}

    def _replace(self, camera: str, subscription: Subscription | None) -> None:
        with self._lock:
            old = self._subscriptions.pop(camera, None)
            if subscription is not None:
                self._subscriptions[camera] = subscription
            # Frames sent while it was not subscribed are no gap.
            self._last_sequence = {key: number for key, number in self._last_sequence.items()
                                   if key[0] != camera}
        if old is None and subscription is None:
            return
        if old is not None:  # destroyed once a wait lets go of it
            self._node.destroy_subscription(old)
        self._wake.trigger()

    def _wait_and_take(self, subscriptions: dict[str, Subscription], timeout_s: float
                       ) -> dict[str, Arrival]:
        """Wait up to ``timeout_s`` for frames of these subscriptions (or a wake-up) and take
        the newest of each that has one."""
        context = self._node.context
        with ExitStack() as held:
            held.enter_context(context.handle)
            wait_set = _rclpy.WaitSet(len(subscriptions), 1, 0, 0, 0, 0, context.handle)
            for subscription in subscriptions.values():
                held.enter_context(subscription.handle)
                wait_set.add_subscription(subscription.handle)
            held.enter_context(self._wake.handle)
            wait_set.add_guard_condition(self._wake.handle)
            wait_set.wait(-1 if timeout_s == math.inf else max(0, int(timeout_s * 1e9)))
            ready = wait_set.get_ready_entities('subscription')
            return {camera: arrival for camera, subscription in subscriptions.items()
                    if subscription.handle.pointer in ready
                    and (arrival := self._take_newest(camera, subscription))}

    def _take_newest(self, camera: str, subscription: Subscription) -> Arrival | None:
        arrival, take = None, subscription.handle.take_message
        while (taken := take(subscription.msg_type, subscription.raw)) is not None:
            if arrival is not None:  # an older one (a reliable writer's backlog)
                self.dropped += 1
            message, info = taken
            self._count(camera, info)
            received_ns = info.get('received_timestamp') or time.time_ns()
            # Receipt on the pipeline's clock: when DDS delivered it, not when it was taken.
            arrival = Arrival(message, time.perf_counter() -
                              max(0, time.time_ns() - received_ns) / 1e9)
        if arrival is None:
            return None
        self._last_frame[camera] = time.monotonic()
        if subscription.raw:  # an Image, its pixels left in the bytes (image_cdr.py)
            arrival = replace(arrival, message=image_from_cdr(arrival.message)
                              or deserialize_message(arrival.message, Image))
        return arrival

    def _count(self, camera: str, info: dict) -> None:
        """One more frame, and the frames its publisher sent in between that DDS replaced
        (KEEP_LAST 1) before they were taken."""
        self.offered += 1
        number = info.get('publication_sequence_number')
        if number is None:  # an RMW without sequence numbers: replaced frames go uncounted
            return
        publisher = (camera, bytes(info.get('publisher_gid', {}).get('data', b'')))
        with self._lock:
            last = self._last_sequence.get(publisher)
            if last is not None and number > last + 1:
                self.offered += number - last - 1
                self.dropped += number - last - 1
            self._last_sequence[publisher] = number


def _never_called(message: object) -> None:
    """The callback of a subscription that the worker takes from (no executor calls it)."""
