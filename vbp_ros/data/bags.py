"""Opening rosbag2 recordings for review, read-only, including MCAP files cut short.

A recorder killed with SIGKILL leaves its MCAP file without summary and footer, and its bag
directory without metadata.yaml. The completed records (chunks) before the cut are intact. A
bag is never written to: such a file is read from a temporary copy of its complete records
closed with an empty summary and a footer (:func:`repaired_copy`: a valid unindexed MCAP
file that rosbags, the mcap tools, Foxglove and ``ros2 bag`` read), so bags on read-only
media can be reviewed and the original stays as it was for other tools. What the copy leaves
out (a cut record, or everything after a corrupt one) is reported by :class:`Repair`.
"""

from __future__ import annotations

import fcntl
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_DATA_END = 0x02, 0x0F
_RECORD_HEAD = struct.Struct('<BQ')  # opcode, content length
_FOOTER_SIZE = _RECORD_HEAD.size + 20 + len(MAGIC)
_CLOSING = (_RECORD_HEAD.pack(OP_DATA_END, 4) + struct.pack('<I', 0) +
            _RECORD_HEAD.pack(OP_FOOTER, 20) + struct.pack('<QQI', 0, 0, 0) + MAGIC)


class BagError(ValueError):
    """A path that is not a readable rosbag2 recording."""


# What opening and reading a bag may raise for a bag that is not readable.
BAG_READ_ERRORS = (BagError, AnyReaderError, OSError)


@dataclass(frozen=True)
class Repair:
    """An MCAP file that was not closed, read from a repaired copy.

    Attributes:
        source: the file as found (left unchanged).
        size: its size in bytes.
        readable: bytes up to its last complete record; the rest is left out.
    """

    source: Path
    size: int
    readable: int

    @property
    def unreadable(self) -> int:
        """Bytes after the last complete record (a cut record, or all after a corrupt one)."""
        return self.size - self.readable

    def describe(self) -> str:
        """One line for a warning."""
        share = 100.0 * self.unreadable / self.size if self.size else 0.0
        return (f'{self.source} was not closed (recorder killed?): read from a repaired copy, '
                f'the file itself is unchanged; {self.unreadable} bytes ({share:.1f} %) after '
                f'offset {self.readable} could not be read and are left out')


def mcap_is_complete(path: Path) -> bool:
    """Whether the MCAP file ends with its footer (it was closed, not cut short)."""
    size = path.stat().st_size
    if size < len(MAGIC) + _FOOTER_SIZE:
        return False
    with path.open('rb') as stream:
        stream.seek(size - _FOOTER_SIZE)
        tail = stream.read()
    return tail.endswith(MAGIC) and tail[0] == OP_FOOTER


def _check_not_being_written(stream: BinaryIO, path: Path) -> None:
    """BagError when another process holds the file locked (the package's recorder locks the
    file it writes). A shared lock on a read-only descriptor: read-only media work."""
    try:
        fcntl.flock(stream, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BagError(f'{path} is still being recorded; stop the recorder first') from None
    except OSError:
        return  # a file system without locks: nothing can be told
    fcntl.flock(stream, fcntl.LOCK_UN)


def complete_records_end(stream: BinaryIO, size: int) -> int:
    """The offset after the last complete record of an MCAP stream (its magic checked)."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise BagError(f'{getattr(stream, "name", "stream")} is not an MCAP file')
    end = len(MAGIC)
    while end + _RECORD_HEAD.size <= size:
        opcode, length = _RECORD_HEAD.unpack(stream.read(_RECORD_HEAD.size))
        if opcode in (OP_FOOTER, OP_DATA_END) or end + _RECORD_HEAD.size + length > size:
            break
        end += _RECORD_HEAD.size + length
        stream.seek(end)
    return end


def repaired_copy(source: Path, target: Path) -> Repair:
    """Copy an unfinished MCAP file's complete records to ``target`` and close the copy with
    an empty summary and a footer. ``source`` is opened read-only and never changed."""
    with source.open('rb') as stream:
        _check_not_being_written(stream, source)
        size = source.stat().st_size
        end = complete_records_end(stream, size)
        stream.seek(0)
        with target.open('wb') as copy:
            remaining = end
            while remaining:
                block = stream.read(min(remaining, 1 << 20))
                if not block:
                    break
                copy.write(block)
                remaining -= len(block)
            copy.write(_CLOSING)
    return Repair(source, size, end)


def bag_storage(path: Path) -> Path:
    """What rosbags should open: the bag directory, or its MCAP file when the directory has
    no metadata.yaml (the recorder was killed) or its MCAP file was not closed."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path} does not exist')
    if not path.is_dir():
        return path
    files = sorted(path.glob('*.mcap'))
    if not (path / 'metadata.yaml').exists():
        if len(files) != 1:
            raise BagError(f'{path} has no metadata.yaml and {len(files)} MCAP files: '
                           'not a rosbag2 recording')
        return files[0]
    if len(files) == 1 and not mcap_is_complete(files[0]):
        return files[0]
    return path


class BagReader(AnyReader):
    """A rosbags reader that knows whether it reads a repaired copy (:attr:`repair`) and
    removes that copy when closed."""

    def __init__(self, storage: Path, copy_dir: Path | None, repair: Repair | None) -> None:
        super().__init__([storage], default_typestore=get_typestore(Stores.ROS2_KILTED))
        self.repair = repair
        self._copy_dir = copy_dir

    def close(self) -> None:
        """Close the reader and remove the repaired copy, if any."""
        try:
            super().close()
        finally:
            if self._copy_dir is not None:
                shutil.rmtree(self._copy_dir, ignore_errors=True)


def open_bag(path: Path) -> BagReader:
    """A read-only reader (use it as a context manager) for a rosbag2 directory (MCAP or
    SQLite 3, as written by ``ros2 bag record`` or vbp_record) or a single .mcap/.db3 file.
    An MCAP file that was not closed is read from a repaired copy in the temporary folder
    (``TMPDIR``); ``reader.repair`` says what was left out."""
    storage = bag_storage(path)
    if storage.is_dir() or storage.suffix != '.mcap' or mcap_is_complete(storage):
        return BagReader(storage, None, None)
    copy_dir = Path(tempfile.mkdtemp(prefix='vbp_bag_'))
    try:
        repair = repaired_copy(storage, copy_dir / storage.name)
        return BagReader(copy_dir / storage.name, copy_dir, repair)
    except BaseException:
        shutil.rmtree(copy_dir, ignore_errors=True)
        raise
