"""Stopping the processes a test starts without leaving Fast DDS shared memory behind.

A ROS process's DDS participant owns a segment ``/dev/shm/fastdds_<id>`` and its lock
``fastdds_<id>_el`` (0.5 MiB, 64 MiB with config/fastdds.xml) and removes them when it is
deleted at a clean exit; a process killed with SIGKILL cannot, and its segment stays until
reboot. So a test stops its processes with SIGINT and waits (:func:`stop`); where it must kill
one, :func:`kill` removes the segments the process owned, read from /proc before the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

SHARED_MEMORY = Path('/dev/shm')
LOCK_SUFFIX = '_el'
STOP_S = 30.0  # longest wait for a clean exit after SIGINT


def own_segments(pid: int) -> set[Path]:
    """The Fast DDS segments that process ``pid`` owns, with their lock files: those it maps
    (``/proc/PID/maps``) whose lock it holds open; not the segments of other participants it
    writes to, nor the port queues shared by a domain's participants. Empty once it is gone."""
    try:
        maps = Path(f'/proc/{pid}/maps').read_text()
        held = {os.readlink(fd) for fd in Path(f'/proc/{pid}/fd').iterdir()}
    except (FileNotFoundError, ProcessLookupError):
        return set()
    mapped = {Path(line.split()[-1]) for line in maps.splitlines()
              if f'{SHARED_MEMORY}/fastdds_' in line}
    return {path for segment in mapped if f'{segment}{LOCK_SUFFIX}' in held
            and not segment.name.startswith('fastdds_port')
            for path in (segment, segment.with_name(segment.name + LOCK_SUFFIX))}


def group_members(group: int) -> list[int]:
    """The processes of process group ``group``."""
    members = []
    for entry in Path('/proc').iterdir():
        try:
            # Field 5 of stat, after the command name in parentheses.
            if entry.name.isdigit() and int(
                    (entry / 'stat').read_text().rsplit(')', 1)[1].split()[2]) == group:
                members.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return members


def owned(process: subprocess.Popen, group: bool = False) -> set[Path]:
    """The segments that ``process`` (every process of its group if ``group``) owns now."""
    pids = group_members(process.pid) if group else [process.pid]
    return set().union(*(own_segments(pid) for pid in pids))


def remove(segments: set[Path]) -> None:
    """Remove the segments of processes that were killed."""
    for path in segments:
        path.unlink(missing_ok=True)


def send(process: subprocess.Popen, number: signal.Signals, group: bool = False) -> None:
    """Signal ``process`` (its process group if ``group``), if it is still there."""
    try:
        if group:
            os.killpg(process.pid, number)
        else:
            process.send_signal(number)
    except ProcessLookupError:
        pass


def kill(process: subprocess.Popen, group: bool = False) -> None:
    """SIGKILL ``process`` (its whole process group if ``group``), wait for it and remove the
    shared-memory segments it owned."""
    segments = owned(process, group)
    send(process, signal.SIGKILL, group)
    process.wait()
    remove(segments)


def stop(process: subprocess.Popen, group: bool = False, timeout: float = STOP_S,
         drain: bool = True) -> int:
    """Stop ``process`` (its process group if ``group``) if it still runs: SIGINT, then
    :func:`kill` after ``timeout`` seconds; its exit code. Its output pipe is read meanwhile
    (a full pipe would hold its shutdown up) unless ``drain`` is False: a thread of the caller
    reads it."""
    if process.poll() is None:
        send(process, signal.SIGINT, group)
        try:
            if drain:
                process.communicate(timeout=timeout)
            else:
                process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(process, group)
    return process.returncode
