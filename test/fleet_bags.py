"""vbp-fleet's test fleet, for the tests that run the command: a folder of mixed bags (rosbag2
MCAP and SQLite 3, ROS 1; raw and JPEG frames with one cut short; gray and colour; a drive's
bag with and without its camera; one corrupt bag; a file that is no bag), with Udacity steering
reports, and the command run on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from vbp_ros.data.camera_bags import CameraFrame, NodeOutput, SteeringSample, write_camera_bag
from vbp_ros.data.sources import synthetic_frames
from vbp_ros.pixels.frames import Crop

MS = 1_000_000
T0 = 1_700_000_000 * 1000 * MS
FRAMES = 9  # per bag, 20 Hz
REPORT_OFFSET_MS = 3  # 50 Hz steering reports, 3 ms after a frame period boundary
BROKEN = 4  # the JPEG bags' frame 4 is cut short
# name: (storage, compressed, colour)
BAGS = {'car1/mcap_raw': ('mcap', False, False), 'car1/mcap_jpeg': ('mcap', True, False),
        'car2/sqlite_raw': ('sqlite3', False, True), 'car2/sqlite_jpeg': ('sqlite3', True, True),
        'old/ros1_raw.bag': ('ros1', False, False), 'old/ros1_jpeg.bag': ('ros1', True, True)}
# A drive's bag (the camera, vbp_node's outputs for it in its namespace) is read; the same
# outputs without the camera frames (a drive recorded before the camera was) fail, and say so.
DRIVE, DRIVE_WITHOUT_CAMERA = 'drives/front', 'drives/front_outputs_only'
READ = len(BAGS) + 1


def report_ms(index: int) -> int:
    return REPORT_OFFSET_MS + 20 * index


def recorded_angle(frame_ms: int) -> float:
    """The angle of the report nearest a frame (brute force over the reports)."""
    nearest = min(range(FRAMES * 3), key=lambda j: abs(report_ms(j) - frame_ms))
    return float(np.float32(0.001 * report_ms(nearest)))


def frames_of(seed: int, compressed: bool, colour: bool) -> tuple[list[CameraFrame], list]:
    """Camera messages and the pixels the engine gets from each (None: undecodable)."""
    drive = synthetic_frames(seed=seed, drive_rate_hz=20.0)
    messages, decoded = [], []
    for index in range(FRAMES):
        gray = next(drive)[0]
        pixels = cv2.merge([gray, gray // 2 + 60, gray]) if colour else gray
        stamp = T0 + index * 50 * MS
        if not compressed:
            messages.append(CameraFrame(stamp, stamp + 5 * MS, pixels))
            decoded.append((pixels, 'rgb'))
            continue
        payload = cv2.imencode('.jpg', pixels)[1].tobytes()
        if index == BROKEN:
            payload = payload[:len(payload) // 2]
        messages.append(CameraFrame(stamp, stamp + 5 * MS, payload=payload))
        decoded.append(None if index == BROKEN else
                       (cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED),
                        'bgr'))
    return messages, decoded


def write_fleet(root: Path) -> dict[str, list]:
    """Write the mixed fleet into ``root``; returns per bag path what the engine sees of
    each frame (None: undecodable)."""
    steering = [SteeringSample(T0 + report_ms(j) * MS, T0 + report_ms(j) * MS + MS,
                               float(np.float32(0.001 * report_ms(j))))
                for j in range(FRAMES * 3)]
    expected = {}
    for seed, (name, (storage, compressed, colour)) in enumerate(BAGS.items()):
        messages, decoded = frames_of(seed, compressed, colour)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        path = write_camera_bag(root / name, messages, storage=storage, compressed=compressed,
                                topic='/front/image_raw' + ('/compressed' if compressed else ''),
                                steering=steering)
        expected[str(path)] = decoded
    messages, decoded = frames_of(len(BAGS), False, False)
    outputs = [NodeOutput(frame.stamp_ns, frame.log_ns + 20 * MS,
                          np.full((66, 200), 0.5, np.float32), 0.1, np.zeros((480, 640, 3),
                                                                             np.uint8))
               for frame in messages]
    drive = write_camera_bag(root / DRIVE, messages, topic='/front/image_raw', steering=steering,
                             outputs=outputs, mask_region=Crop(200, 0, 280, 640),
                             node_namespace='front')
    expected[str(drive)] = decoded
    write_camera_bag(root / DRIVE_WITHOUT_CAMERA, [], steering=steering, outputs=outputs,
                     node_namespace='front')
    (root / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(range(256)) * 8)
    (root / 'car1' / 'notes.txt').write_text('not a bag')
    return expected


def run_fleet(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, '-m', 'vbp_ros.tools.fleet', *map(str, args),
               '--object-store-mb', '100', '--no-progress']
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
