"""vbp-drive: the drive pipeline of drive.launch.py where ROS 2 launch is not installed.

Starts ``vbp_record``, ``vbp_node`` and ``road_camera`` as their own processes, with the same
parameter files and topic wiring as drive.launch.py (vbp_ros.ros.drive_plan), prints a status
line every second (frame rates, pipeline latency p50/p99, drops, messages recorded) and, after
``--duration`` seconds or Ctrl-C, stops them in data-flow order (camera, node, recorder, so
the bag gets every processed frame), reads the bag back and prints a summary.

    vbp-drive --duration 20 --bag-dir runs/drive/bag
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from ..data.bags import open_bag
from ..data.recording import default_bag_dir
from ..monitor import percentiles
from . import drive_plan
from .paths import share

STARTUP_TIMEOUT_S = 120.0  # the first start imports torch and loads the model
STOP_TIMEOUT_S = {'road_camera': 10.0, 'vbp': 15.0, 'vbp_record': 120.0}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATUS_WINDOW = 300  # latency percentiles of the status line cover this many recent frames


@dataclass
class Child:
    """One process of the pipeline and its log file."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    _log: IO | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open('w')
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # Ctrl-C reaches vbp-drive only

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL after its timeout; the exit code (None: never started)."""
        if self.process is None:
            return None
        if self.running():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S[self.name])
            except subprocess.TimeoutExpired:
                print(f'{self.name} did not stop in {STOP_TIMEOUT_S[self.name]:.0f} s; killed',
                      file=sys.stderr)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


class DriveMonitor(Node):
    """Watches the pipeline from outside: camera frames, angles, latencies, diagnostics."""

    def __init__(self, namespace: str, image_topic: str) -> None:
        super().__init__('vbp_drive', namespace=namespace)
        self.image_topic = self.resolve_topic_name(image_topic)
        self.camera_stamps: list[int] = []
        self.angles = 0
        self.latencies_ms: list[float] = []
        self.status: dict[str, dict[str, str]] = {}
        self.create_subscription(Image, image_topic, self._on_frame, qos_profile_sensor_data)
        self.create_subscription(Float32, 'steering_angle', self._on_angle, RELIABLE)
        self.create_subscription(Float32, 'debug/pipeline_latency_ms',
                                 lambda m: self.latencies_ms.append(m.data), RELIABLE)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, RELIABLE)

    def _on_frame(self, message: Image) -> None:
        self.camera_stamps.append(message.header.stamp.sec * 1_000_000_000 +
                                  message.header.stamp.nanosec)

    def _on_angle(self, _: Float32) -> None:
        self.angles += 1

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            self.status[status.name] = {value.key: value.value for value in status.values}

    def node_status(self, node: str) -> dict[str, str]:
        """The latest diagnostic values of ``node`` (e.g. 'vbp'), empty before any."""
        return next((values for name, values in self.status.items()
                     if name.split(':')[0] == node), {})

    def subscribed_by(self, topic: str, node: str) -> bool:
        return any(info.node_name == node
                   for info in self.get_subscriptions_info_by_topic(self.resolve_topic_name(topic)))


def main(argv: list[str] | None = None) -> int:
    """Run a drive; exit code 0, 1 when a process failed, 2 when the bag directory exists."""
    options = _parse(argv)
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(share('config', 'fastdds.xml')))
    bag = None if options.no_record else (options.bag_dir or default_bag_dir())
    if bag is not None and bag.exists():
        print(f'vbp-drive: {bag} exists already; give a new --bag-dir', file=sys.stderr)
        return 2
    log_dir = options.log_dir or Path(f'{bag or "vbp_drive"}_logs')
    log_dir.mkdir(parents=True, exist_ok=True)
    children = _children(options, bag, log_dir)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children in order, as for Ctrl-C
    with rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO):
        monitor = DriveMonitor(options.namespace, options.image_topic)
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        try:
            failure = _start(children, monitor, executor, options.record_params_file)
            if failure is None:
                failure = _run(children, monitor, executor, options.duration)
        except KeyboardInterrupt:  # the way to end a drive without --duration
            failure = None
        print()
        codes = {}
        for child in children:
            codes[child.name] = child.stop()
            executor.spin_once(timeout_sec=0.3)  # the last outputs on their way
        summary = _summary(monitor, bag, codes, log_dir)
        monitor.destroy_node()
    _print_summary(summary)
    (log_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    if failure:
        print(f'vbp-drive: {failure}', file=sys.stderr)
        return 1
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parse(argv: list[str] | None) -> argparse.Namespace:
    config = share('config')
    parser = argparse.ArgumentParser(
        prog='vbp-drive', description='Run road_camera, vbp_node and vbp_record (as '
        'drive.launch.py does) until Ctrl-C or --duration, with a live status line.')
    parser.add_argument('--duration', type=float, default=0.0,
                        help='seconds from the first camera frame; 0: until Ctrl-C')
    parser.add_argument('--bag-dir', type=Path,
                        help='new rosbag2 directory (default rosbag2_YYYY_MM_DD-HH_MM_SS)')
    parser.add_argument('--no-record', action='store_true', help='do not start the recorder')
    parser.add_argument('--log-dir', type=Path,
                        help="the processes' logs and summary.json (default BAG_DIR_logs)")
    parser.add_argument('--source', default=None, choices=drive_plan.CAMERA_SOURCES,
                        help="road_camera source (default: the camera parameter file's)")
    parser.add_argument('--path', default=None, help='video file or image folder')
    parser.add_argument('--model', default=None, help='vbp_ros checkpoint; default: bundled')
    parser.add_argument('--device', default=None, help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--image-topic', default=drive_plan.DEFAULT_IMAGE_TOPIC,
                        help='camera topic between road_camera and vbp_node')
    parser.add_argument('--namespace', default='', help='namespace of every node and topic')
    parser.add_argument('--params-file', type=Path, default=config / drive_plan.VBP_PARAMS,
                        help='vbp_node parameters')
    parser.add_argument('--camera-params-file', type=Path,
                        default=config / drive_plan.CAMERA_PARAMS, help='road_camera parameters')
    parser.add_argument('--record-params-file', type=Path,
                        default=config / drive_plan.RECORD_PARAMS, help='vbp_record parameters')
    options = parser.parse_args(argv)
    if options.duration < 0:
        parser.error('--duration must not be negative')
    for path in (options.params_file, options.camera_params_file, options.record_params_file):
        if not path.is_file():
            parser.error(f'{path} does not exist')
    return options


def _children(options: argparse.Namespace, bag: Path | None, log_dir: Path) -> list[Child]:
    """The processes in data-flow order: camera, node, recorder. The camera's first frame
    waits for vbp_node and vbp-drive, and for the recorder when it records the camera."""
    namespace = options.namespace
    common = ['--ros-args', '-r', f'__ns:=/{namespace.strip("/")}']
    topic = options.image_topic
    records_camera = bag is not None and drive_plan.resolve_topic(topic, namespace) in {
        drive_plan.resolve_topic(recorded, namespace)
        for recorded in drive_plan.record_topics(options.record_params_file)}
    camera = [*common, '--params-file', str(options.camera_params_file), '-r', f'image:={topic}']
    camera += _overrides(source=options.source, path=options.path,
                         wait_for_subscribers=2 + records_camera)
    node = [*common, '--params-file', str(options.params_file), '-r', f'image:={topic}',
            '-r', f'image/compressed:={topic}/compressed']
    node += _overrides(model=options.model, device=options.device)
    children = [Child('road_camera', [_executable('road_camera'), *camera],
                      log_dir / 'road_camera.log'),
                Child('vbp', [_executable('vbp_node'), *node], log_dir / 'vbp_node.log')]
    if bag is not None:
        record = [*common, '--params-file', str(options.record_params_file),
                  '-p', f'bag_dir:={bag.resolve()}']
        children.append(Child('vbp_record', [_executable('vbp_record'), *record],
                              log_dir / 'vbp_record.log'))
    return children


def _overrides(**parameters: str | None) -> list[str]:
    return [argument for name, value in parameters.items() if value is not None
            for argument in ('-p', f'{name}:={value}')]


def _executable(name: str) -> str:
    """An executable of this package: beside this script (venv bin/ or colcon lib/vbp_ros/),
    beside the interpreter, or on PATH."""
    for folder in (Path(sys.argv[0]).resolve().parent, Path(sys.executable).parent):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f'vbp-drive: executable {name} not found; is vbp_ros installed?')
    return found


def _start(children: list[Child], monitor: DriveMonitor, executor: SingleThreadedExecutor,
           record_params: Path) -> str | None:
    """Start recorder and node, wait until the node subscribes to the camera and the recorder
    to the node's outputs it records, then start the camera, so that no frame goes
    unprocessed or unrecorded for want of a subscriber. An error text on failure."""
    camera, *listeners = children
    for child in listeners:
        child.start()
    print('vbp-drive: waiting for vbp_node' + (' and vbp_record' if len(listeners) > 1 else ''))
    recorded = {monitor.resolve_topic_name(topic) for topic in drive_plan.record_topics(
        record_params)} if len(listeners) > 1 else set()
    awaited = [topic for topic in drive_plan.VBP_OUTPUTS
               if monitor.resolve_topic_name(topic) in recorded]
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (monitor.subscribed_by(monitor.image_topic, 'vbp') and
               all(monitor.subscribed_by(topic, 'vbp_record') for topic in awaited)):
        executor.spin_once(timeout_sec=0.1)
        for child in listeners:
            if not child.running():
                return f'{child.name} exited at start:\n{child.log_tail()}'
        if time.monotonic() > deadline:
            return f'vbp_node or vbp_record not ready after {STARTUP_TIMEOUT_S:.0f} s'
    camera.start()
    return None


def _run(children: list[Child], monitor: DriveMonitor, executor: SingleThreadedExecutor,
         duration: float) -> str | None:
    """Spin and print a status line each second until ``duration`` seconds after the first
    camera frame; an error text when a process exits on its own."""
    start = next_status = None
    counts = (0, 0)
    waited_since = time.monotonic()
    while start is None or not duration or time.monotonic() - start < duration:
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if start is None and monitor.camera_stamps:
            start = next_status = now
        if start is None and now - waited_since > STARTUP_TIMEOUT_S:
            return f'no camera frame after {STARTUP_TIMEOUT_S:.0f} s'
        if next_status is not None and now >= next_status:
            next_status += 1.0
            counts = _print_status(monitor, now - start, counts)
        for child in children:
            if not child.running():
                return f'{child.name} exited early:\n{child.log_tail()}'
    return None


def _print_status(monitor: DriveMonitor, elapsed: float, previous: tuple[int, int]
                  ) -> tuple[int, int]:
    counts = (len(monitor.camera_stamps), monitor.angles)
    latency = percentiles(monitor.latencies_ms[-STATUS_WINDOW:])
    vbp = monitor.node_status('vbp')
    drops = sum(int(value) for key, value in vbp.items() if key.startswith('dropped'))
    recorded = sum(int(value) for key, value in monitor.node_status('vbp_record').items()
                   if key.startswith('written '))
    line = (f't={elapsed:5.1f} s  camera {counts[0] - previous[0]:3d} fps  vbp '
            f'{counts[1] - previous[1]:3d} fps  latency p50 {latency["p50"]:6.1f} ms p99 '
            f'{latency["p99"]:6.1f} ms  drops {drops}  recorded {recorded} messages')
    print(line, end='\r' if sys.stdout.isatty() else '\n', flush=True)
    return counts


def _summary(monitor: DriveMonitor, bag: Path | None, codes: dict[str, int | None],
             log_dir: Path) -> dict:
    """What was published, processed and recorded, read back from the bag."""
    vbp = monitor.node_status('vbp')
    summary = {
        'camera frames seen': len(monitor.camera_stamps),
        'steering angles seen': monitor.angles,
        'vbp_node at its last diagnostics': {key: vbp[key] for key in vbp
                                             if key.startswith(('frames', 'dropped'))},
        'pipeline latency ms': percentiles(monitor.latencies_ms) if monitor.latencies_ms
                               else None,  # JSON has no NaN
        'latency samples': len(monitor.latencies_ms),
        'exit codes': codes,
        'logs': str(log_dir),
    }
    if bag is not None and bag.exists():
        summary['bag'] = str(bag)
        summary['recorded'] = _recorded(bag, set(monitor.camera_stamps))
    return summary


def _recorded(bag: Path, camera_stamps: set[int]) -> dict:
    """Messages per topic in the bag, and how many image stamps are camera frame stamps."""
    counts: dict[str, int] = {}
    camera_stamped: dict[str, int] = {}
    with open_bag(bag) as reader:
        for connection in reader.connections:
            counts[connection.topic] = connection.msgcount
        images = [c for c in reader.connections if c.msgtype == 'sensor_msgs/msg/Image']
        for connection, _, data in reader.messages(connections=images):
            stamp = reader.deserialize(data, connection.msgtype).header.stamp
            camera_stamped[connection.topic] = camera_stamped.get(connection.topic, 0) + (
                stamp.sec * 1_000_000_000 + stamp.nanosec in camera_stamps)
    return {'messages': counts, 'images with a camera frame stamp': camera_stamped,
            'MB': round(sum(f.stat().st_size for f in bag.iterdir()) / 1e6, 1)}


def _print_summary(summary: dict) -> None:
    latency = summary['pipeline latency ms']
    seen, processed = summary['camera frames seen'], summary['steering angles seen']
    print(f'camera frames seen {seen}, processed (steering angles seen) {processed}, not '
          f'processed {seen - processed} (superseded, stale or invalid: see vbp_node.log and '
          '/diagnostics)')
    if latency:
        print(f"pipeline latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, max "
              f"{latency['max']:.1f} ms over {summary['latency samples']} frames")
    if 'recorded' in summary:
        recorded = summary['recorded']
        print(f"recorded into {summary['bag']} ({recorded['MB']} MB):")
        for topic, count in sorted(recorded['messages'].items()):
            stamped = recorded['images with a camera frame stamp'].get(topic)
            note = f' ({stamped} with a camera frame stamp)' if stamped is not None else ''
            print(f'  {topic}: {count}{note}')
    print(f"logs and summary.json: {summary['logs']}")
