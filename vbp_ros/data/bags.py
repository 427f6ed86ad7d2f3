"""Opening rosbag2 recordings for review, including MCAP files cut short by a killed recorder.

A recorder killed with SIGKILL leaves its MCAP file without summary and footer, and its bag
directory without metadata.yaml. The completed records (chunks) before the cut are intact;
:func:`repair_mcap` drops the partial record at the end and appends an empty summary and a
footer, which makes the file a valid unindexed MCAP file that rosbags, the mcap tools,
Foxglove and ``ros2 bag`` read.
"""

from __future__ import annotations

import fcntl
import struct
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_DATA_END = 0x02, 0x0F
_RECORD_HEAD = struct.Struct('<BQ')  # opcode, content length
_FOOTER_SIZE = _RECORD_HEAD.size + 20 + len(MAGIC)


class BagError(ValueError):
    """A path that is not a readable rosbag2 recording."""


def mcap_is_complete(path: Path) -> bool:
    """Whether the MCAP file ends with its footer (it was closed, not cut short)."""
    size = path.stat().st_size
    if size < len(MAGIC) + _FOOTER_SIZE:
        return False
    with path.open('rb') as stream:
        stream.seek(size - _FOOTER_SIZE)
        tail = stream.read()
    return tail.endswith(MAGIC) and tail[0] == OP_FOOTER


def repair_mcap(path: Path) -> int:
    """Cut an unfinished MCAP file after its last complete record and close it.

    Returns the number of bytes dropped. Refuses a file another process holds locked (the
    package's recorder locks the file it is writing).
    """
    with path.open('r+b') as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BagError(f'{path} is still being recorded; stop the recorder first') from None
        if stream.read(len(MAGIC)) != MAGIC:
            raise BagError(f'{path} is not an MCAP file')
        size = path.stat().st_size
        end = len(MAGIC)
        while end + _RECORD_HEAD.size <= size:
            opcode, length = _RECORD_HEAD.unpack(stream.read(_RECORD_HEAD.size))
            if opcode in (OP_FOOTER, OP_DATA_END) or end + _RECORD_HEAD.size + length > size:
                break
            end += _RECORD_HEAD.size + length
            stream.seek(end)
        stream.truncate(end)
        stream.seek(end)
        stream.write(_RECORD_HEAD.pack(OP_DATA_END, 4) + struct.pack('<I', 0))
        stream.write(_RECORD_HEAD.pack(OP_FOOTER, 20) + struct.pack('<QQI', 0, 0, 0) + MAGIC)
        return size - end


def bag_storage(path: Path) -> Path:
    """The path rosbags should open: the bag directory, or its MCAP file when the directory
    has no metadata.yaml (the recorder was killed). An unfinished MCAP file is repaired."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path} does not exist')
    target = path
    if path.is_dir() and not (path / 'metadata.yaml').exists():
        files = sorted(path.glob('*.mcap'))
        if len(files) != 1:
            raise BagError(f'{path} has no metadata.yaml and {len(files)} MCAP files: '
                           'not a rosbag2 recording')
        target = files[0]
    if target.suffix == '.mcap' and not mcap_is_complete(target):
        repair_mcap(target)
    return target


def open_bag(path: Path) -> AnyReader:
    """A rosbags reader (use it as a context manager) for a rosbag2 directory (MCAP or
    SQLite 3, as written by ``ros2 bag record`` or vbp_record) or a single .mcap/.db3 file."""
    return AnyReader([bag_storage(path)], default_typestore=get_typestore(Stores.ROS2_KILTED))
