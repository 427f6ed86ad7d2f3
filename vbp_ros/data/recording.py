"""A rosbag2 recording (MCAP storage, metadata.yaml) written on its own thread (ROS-free).

Callers hand over serialized (CDR) messages; a writer thread stores them with the rosbags
library, so the thread that receives messages never waits for the disk. A chunk is completed
and flushed to the operating system at least every ``chunk_period_s``, which bounds what a
killed process loses; :func:`vbp_ros.data.bags.open_bag` reads such a file. Messages
beyond ``queue_limit_bytes`` waiting for the disk are dropped and counted, never buffered
without bound.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

COMPRESSIONS = ('none', 'zstd')


def default_bag_dir(now: datetime | None = None) -> Path:
    """``rosbag2_YYYY_MM_DD-HH_MM_SS`` in the working directory, as ``ros2 bag record`` names
    its bags."""
    return Path((now or datetime.now()).strftime('rosbag2_%Y_%m_%d-%H_%M_%S'))


@dataclass(frozen=True)
class RecordingStats:
    """Messages written and dropped per topic, bytes written, and the backlog."""

    written: dict[str, int]
    dropped: dict[str, int]
    bytes_written: int
    queued_bytes: int


class BagRecording:
    """A new rosbag2 directory at ``path`` that topics are added to and messages written to
    from any thread. Use as a context manager, or call :meth:`close`.

    Args:
        path: the bag directory to create; it must not exist.
        compression: 'none' or 'zstd' (MCAP chunk compression).
        chunk_period_s: longest time a message waits before its chunk reaches the file.
        queue_limit_bytes: most bytes waiting for the writer thread.
        typestore: message definitions; default ROS 2 Kilted's.
    """

    def __init__(self, path: Path, compression: str = 'none', chunk_period_s: float = 1.0,
                 queue_limit_bytes: int = 512 << 20, typestore: Typestore | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        if chunk_period_s <= 0 or queue_limit_bytes <= 0:
            raise ValueError('chunk_period_s and queue_limit_bytes must be positive')
        self.path = Path(path)
        if self.path.exists():
            raise ValueError(f'{self.path} exists already; a recording never overwrites')
        self.typestore = typestore or get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if compression == 'zstd':
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        # Tells readers that the file is being written; the kernel drops the lock on exit.
        fcntl.flock(self._writer.storage.bio, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._chunk_period_s = chunk_period_s
        self._queue_limit = queue_limit_bytes
        self._queue: deque[tuple] = deque()
        self._queued_bytes = 0
        self._condition = threading.Condition()
        self._closing = False
        self._written: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._bytes_written = 0
        self._topics: set[str] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name='bag writer', daemon=True)
        self._thread.start()

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = ()) -> None:
        """Register ``topic`` of ``msgtype`` (e.g. ``sensor_msgs/msg/Image``). Raises
        ValueError for a type the typestore does not know, or a topic added twice."""
        if msgtype not in self.typestore.fielddefs:
            raise ValueError(f'{topic}: message type {msgtype} is unknown to the bag writer')
        with self._condition:
            if topic in self._topics:
                raise ValueError(f'{topic} is already recorded')
            self._topics.add(topic)
            self._queue.append(('topic', topic, msgtype, tuple(offered_qos)))
            self._condition.notify()

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one serialized message of an added topic; False when it was dropped (the
        backlog is over the limit, or the recording is closing)."""
        with self._condition:
            if self._closing or self._error is not None or \
                    self._queued_bytes + len(data) > self._queue_limit:
                self._dropped[topic] += 1
                return False
            self._queue.append(('message', topic, timestamp_ns, data))
            self._queued_bytes += len(data)
            self._condition.notify()
            return True

    def stats(self) -> RecordingStats:
        with self._condition:
            return RecordingStats(dict(self._written), dict(self._dropped), self._bytes_written,
                                  self._queued_bytes)

    @property
    def error(self) -> BaseException | None:
        """What stopped the writer thread (e.g. a full disk), if anything did."""
        return self._error

    def close(self) -> RecordingStats:
        """Write what is queued, then the summary and metadata.yaml. Idempotent."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()
        return self.stats()

    def __enter__(self) -> BagRecording:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        connections: dict[str, object] = {}
        storage = self._writer.storage
        chunk_started: float | None = None
        try:
            while True:
                item = self._next(chunk_started)
                if item is not None:
                    self._store(item, connections, storage)
                    chunk_started = chunk_started or time.monotonic()
                if chunk_started is not None and (
                        item is None or time.monotonic() - chunk_started >= self._chunk_period_s):
                    if storage.chunk.bio.tell():
                        storage.close_chunk()
                        storage.bio.flush()
                    chunk_started = None
                if item is None and self._closing:
                    break
            self._writer.close()
        except Exception as error:  # e.g. a full disk: reported through .error
            with self._condition:
                self._error = error

    def _store(self, item: tuple, connections: dict[str, object], storage: object) -> None:
        if item[0] == 'topic':
            _, topic, msgtype, qos = item
            connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
            return
        _, topic, timestamp_ns, data = item
        chunk = storage.chunk
        self._writer.write(connections[topic], timestamp_ns, data)
        if storage.chunk is not chunk:  # rosbags completed a chunk at 1 MiB
            storage.bio.flush()
        with self._condition:
            self._written[topic] += 1
            self._bytes_written += len(data)
            self._queued_bytes -= len(data)

    def _next(self, chunk_started: float | None) -> tuple | None:
        """The next queued item, or None when the pending chunk is due or the queue is empty
        at closing time."""
        with self._condition:
            while not self._queue:
                if self._closing:
                    return None
                if chunk_started is None:
                    self._condition.wait()
                    continue
                remaining = chunk_started + self._chunk_period_s - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    return None
            return self._queue.popleft()
