"""Memory of a real-time process (ROS-free): the C allocator keeps freed frame buffers for the
next frame instead of handing them back to the kernel, and the garbage collector's full passes
leave the long-lived objects alone.

glibc serves a request of 128 KiB or more (a 640x480 rgb8 frame is 900 KiB) with a fresh
``mmap`` and returns it with ``munmap`` when it is freed, or trims the heap top back to the
kernel; the next frame's buffer is then faulted in page by page and zeroed by the kernel. Every
copy of a frame (DDS into its history, the ROS message, the numpy views' owners) paid that: a
subscriber doing nothing else spent 1.9 ms of CPU per 640x480 rgb8 frame at 120 Hz, two thirds
of it in page faults, and 0.6 ms with the settings below (measured here, paired runs). The
ROS 2 real-time guidelines ask the same of C++ nodes (no trimming, no mmap for the working set).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: frames up to 4K rgb8 come from the heap
TRIM_THRESHOLD_BYTES = 512 << 20  # free memory kept at the heap top for the next frames


def keep_frame_memory() -> bool:
    """Tell glibc's malloc to keep freed frame-sized blocks for reuse (see the module
    docstring); whether it could (False on another C library: nothing changes)."""
    name = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def settle_heap() -> None:
    """Collect what start-up left behind, then exempt every object alive now from the garbage
    collector's full passes (``gc.freeze``): with torch and a model loaded, a process holds
    some 200,000 objects, and a full collection, which the interpreter starts whenever enough
    new objects have survived, held every thread for 76 ms (measured here), a frame's deadline
    twice over. Call it once the long-lived objects exist (a model built) and before frames
    flow; objects frozen earlier are collected again first (a model that was replaced)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
