"""A minimal Foxglove WebSocket protocol client (subprotocol foxglove.sdk.v1): connect, read the
advertised channels, subscribe, and collect the messages. Written from the protocol's wire
format, independent of the server's implementation, for the tests and vbp-latency's live-view
figures."""

from __future__ import annotations

import json
import struct
import threading
import time
from dataclasses import dataclass, field

import websocket

SUBPROTOCOL = 'foxglove.sdk.v1'
MESSAGE_DATA = 0x01  # binary opcode: subscription id (u32), log time (u64), payload


@dataclass
class Received:
    """Messages by topic: (log time ns, payload bytes)."""

    by_topic: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)


class FoxgloveClient:
    """One connection (use as a context manager); ``channels`` maps topic to the advertised
    channel."""

    def __init__(self, port: int, host: str = '127.0.0.1') -> None:
        self._url = f'ws://{host}:{port}'
        self.connection: websocket.WebSocket | None = None
        self.server_info: dict = {}
        self.channels: dict[str, dict] = {}
        self._topics_by_subscription: dict[int, str] = {}
        self.received = Received()

    def read_advertisements(self, topics: set[str], timeout: float = 10.0) -> None:
        """Read until every topic in ``topics`` is advertised."""
        deadline = time.monotonic() + timeout
        while not topics <= set(self.channels):
            self._read(max(0.0, deadline - time.monotonic()))

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe to advertised topics."""
        subscriptions = []
        for topic in topics:
            subscription = len(self._topics_by_subscription) + 1
            self._topics_by_subscription[subscription] = topic
            subscriptions.append({'id': subscription, 'channelId': self.channels[topic]['id']})
        self.connection.send(json.dumps({'op': 'subscribe', 'subscriptions': subscriptions}))

    def unsubscribe_all(self) -> None:
        """Drop every subscription."""
        ids = list(self._topics_by_subscription)
        self.connection.send(json.dumps({'op': 'unsubscribe', 'subscriptionIds': ids}))
        self._topics_by_subscription.clear()

    def collect(self, seconds: float) -> None:
        """Read messages for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(deadline - time.monotonic())

    def _read(self, timeout: float) -> None:
        self.connection.settimeout(max(timeout, 0.001))
        try:
            message = self.connection.recv()
        except websocket.WebSocketTimeoutException:
            return
        if isinstance(message, str):
            document = json.loads(message)
            if document['op'] == 'serverInfo':
                self.server_info = document
            elif document['op'] == 'advertise':
                self.channels.update({c['topic']: c for c in document['channels']})
            return
        if message[0] == MESSAGE_DATA:
            subscription, log_time = struct.unpack_from('<IQ', message, 1)
            topic = self._topics_by_subscription.get(subscription)
            if topic is not None:
                self.received.by_topic.setdefault(topic, []).append((log_time, message[13:]))

    def __enter__(self) -> FoxgloveClient:
        self.connection = websocket.create_connection(self._url, subprotocols=[SUBPROTOCOL])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()


class ChannelWatcher:
    """A client subscribed to every channel of a live view, reading on a thread of its own
    from its creation (once ``wait_for`` topics are advertised) until :meth:`stop`: what a
    viewer in a browser costs the server, and what it receives."""

    def __init__(self, port: int, wait_for: set[str]) -> None:
        self.client = FoxgloveClient(port).__enter__()
        self.client.read_advertisements(wait_for)
        self.client.subscribe(sorted(self.client.channels))
        self.started = time.monotonic()
        self._running = True
        self._thread = threading.Thread(target=self._read, name='live_view_client',
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            self.client.collect(0.1)

    def stop(self) -> tuple[float, dict[str, int]]:
        """Disconnect; the seconds connected and the messages received per channel."""
        self._running = False
        self._thread.join()
        self.client.__exit__(None, None, None)
        return time.monotonic() - self.started, {
            topic: len(messages) for topic, messages in self.client.received.by_topic.items()}

    def rates_hz(self) -> dict[str, float]:
        """Messages a second per channel while it flowed: from its first message's log time
        to its last one (channels with fewer than two messages give 0)."""
        rates = {}
        for topic, messages in self.client.received.by_topic.items():
            span_ns = messages[-1][0] - messages[0][0] if len(messages) > 1 else 0
            rates[topic] = (len(messages) - 1) / span_ns * 1e9 if span_ns > 0 else 0.0
        return rates


def protobuf_fields(payload: bytes) -> dict[int, bytes | int]:
    """The top-level fields of a protobuf message (length-delimited ones as bytes)."""
    fields, position = {}, 0
    while position < len(payload):
        key, position = _varint(payload, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], position = _varint(payload, position)
        elif wire_type == 2:
            length, position = _varint(payload, position)
            fields[number] = payload[position:position + length]
            position += length
        else:
            raise ValueError(f'wire type {wire_type} is not expected here')
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
