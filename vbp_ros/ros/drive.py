"""vbp-drive: the drive pipeline of drive.launch.py where ROS 2 launch is not installed.

Starts ``vbp_record``, ``vbp_node`` and ``road_camera`` as their own processes, with the same
parameter files and topic wiring as drive.launch.py (:mod:`vbp_ros.drive.plan`), prints a
status line every second (frame rates, pipeline latency p50/p99, drops, messages recorded) and,
after ``--duration`` seconds or Ctrl-C (SIGINT or SIGTERM; more of them are ignored while it
stops), stops them in data-flow order (camera, node, recorder, so the bag gets every processed
frame), collects each process's final counts from /diagnostics, reads the bag back and prints
a summary (:mod:`vbp_ros.drive.summary`). The bag holds the camera frames, vbp_node's masks,
their region and the other outputs but the overlays, which vbp-review draws (``--record-overlay``
records them too). It fails loudly (exit code 1) when a process exited on its own or with an
error, the recorder lost messages, or the bag does not hold what vbp_node published.

    vbp-drive --duration 20 --bag-dir runs/drive/bag
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import rclpy
from rclpy.exceptions import InvalidNamespaceException, InvalidTopicNameException
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_namespace import validate_namespace
from rclpy.validate_topic_name import validate_topic_name

from ..data.recording import default_bag_dir
from ..drive.plan import DriveRequest, drive_processes
from ..drive.summary import drive_problems, drive_summary, format_summary
from ..drive.supervisor import Child, first_exited
from ..engine.memory import keep_frame_memory
from ..engine.monitor import percentiles
from ..interface import (CAMERA_PARAMS, CAMERA_SOURCES, DEFAULT_CAMERA_TOPIC, FASTDDS_PROFILE,
                         OVERLAY_TOPIC, RECORD_PARAMS, RECORDER_NODE, VBP_NODE, VBP_PARAMS,
                         json_text)
from ..live.client import ChannelWatcher
from .drive_monitor import DriveMonitor
from .paths import share
from .stop import StopRequest

STARTUP_TIMEOUT_S = 120.0  # the first start imports torch and loads the model
NAN = float('nan')
STATUS_WINDOW = 300  # latency percentiles of the status line cover this many recent frames
FINAL_STATUS_S = 2.0  # longest wait for a stopped process's final /diagnostics


def main(argv: list[str] | None = None) -> int:
    """Run a drive; exit code 0, 1 when a process failed or the recording is not what vbp_node
    published, 2 when the bag directory exists."""
    options = _parse(argv)
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(share('config', FASTDDS_PROFILE)))
    bag = None if options.no_record else (options.bag_dir or default_bag_dir())
    if bag is not None and bag.exists():
        print(f'vbp-drive: {bag} exists already; give a new --bag-dir', file=sys.stderr)
        return 2
    log_dir = options.log_dir or Path(f'{bag or "vbp_drive"}_logs')
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f'vbp-drive: cannot make the logs folder {log_dir}: {error.strerror}',
              file=sys.stderr)
        return 1
    request = DriveRequest(options.namespace, options.image_topic, options.params_file,
                           options.camera_params_file, options.record_params_file, bag,
                           options.source, options.path, options.model, options.device,
                           options.foxglove_port, options.record_overlay)
    children = drive_processes(request, log_dir)
    stop = StopRequest().install()  # Ctrl-C or SIGTERM: stop the children in order
    keep_frame_memory()  # its monitor takes every camera frame
    with rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO):
        monitor = DriveMonitor(options.namespace, options.image_topic)
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        watcher = None
        try:
            failure = _start(children, monitor, executor, request.awaited_outputs(), stop)
            if failure is None and not stop.requested:
                if options.watch_live_view:  # the live view runs once vbp_node subscribes
                    watcher = ChannelWatcher(options.foxglove_port,
                                             {monitor.resolve_topic_name(OVERLAY_TOPIC)})
                failure = _run(children, monitor, executor, options.duration, stop)
        finally:
            print()
            live = _watched(watcher)
            codes = _stop_all(children, monitor, executor)
        summary = drive_summary(monitor.seen, bag, codes, log_dir, monitor.final_counts(),
                                monitor.image_topic if request.records_camera() else None)
        if live is not None:
            summary['live view client'] = live
        monitor.destroy_node()
    problems = ([failure] if failure else []) + drive_problems(summary)
    summary['problems'] = problems
    print(format_summary(summary))
    unwritten = _write_summary(log_dir / 'summary.json', summary)
    for problem in problems + ([unwritten] if unwritten else []):
        print(f'vbp-drive: {problem}', file=sys.stderr)
    return 1 if problems or unwritten else 0


def _write_summary(path: Path, summary: dict) -> str | None:
    """Write summary.json; on a full or read-only disk remove what was begun and say so
    (the summary printed above is then the record)."""
    try:
        path.write_text(json_text(summary))
    except OSError as error:
        with contextlib.suppress(OSError):  # a read-only disk
            path.unlink(missing_ok=True)
        return f'cannot write {path}: {error.strerror}; the summary above is all there is'
    return None


def _watched(watcher: ChannelWatcher | None) -> dict | None:
    """What the live-view client received, for the summary (None without one)."""
    if watcher is None:
        return None
    seconds, messages = watcher.stop()
    return {'seconds connected': round(seconds, 1), 'messages': messages,
            'messages a second': {topic: round(rate, 2)
                                  for topic, rate in sorted(watcher.rates_hz().items())}}


def _stop_all(children: list[Child], monitor: DriveMonitor,
              executor: SingleThreadedExecutor) -> dict[str, int | None]:
    """Stop the processes in data-flow order and collect each one's final /diagnostics (its
    counts once it has stopped); their exit codes."""
    codes = {}
    for child in children:
        codes[child.name] = child.stop()
        deadline = time.monotonic() + FINAL_STATUS_S
        while child.process is not None and not monitor.stopped(child.name) and \
                time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    return codes


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
    parser.add_argument('--record-overlay', action='store_true',
                        help='record vbp/overlay too (for rviz2 or Foxglove replays; vbp-review '
                        'draws overlays from the camera frames and masks without it)')
    parser.add_argument('--log-dir', type=Path,
                        help="the processes' logs and summary.json (default BAG_DIR_logs)")
    parser.add_argument('--source', default=None, choices=CAMERA_SOURCES,
                        help="road_camera source (default: the camera parameter file's)")
    parser.add_argument('--path', default=None, help='video file or image folder')
    parser.add_argument('--model', default=None, help='vbp_ros checkpoint; default: bundled')
    parser.add_argument('--device', default=None, help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--foxglove-port', type=int, default=None, metavar='PORT',
                        help='live view of vbp_node for Foxglove/Lichtblick on this WebSocket '
                             'port of 127.0.0.1 (default: the parameter file\'s, 0: off)')
    parser.add_argument('--watch-live-view', action='store_true',
                        help='connect a Foxglove client to every channel of the live view '
                        '(needs --foxglove-port) and report the messages a second it '
                        'received, as a browser would')
    parser.add_argument('--image-topic', default=DEFAULT_CAMERA_TOPIC,
                        help='camera topic between road_camera and vbp_node')
    parser.add_argument('--namespace', default='', help='namespace of every node and topic')
    parser.add_argument('--params-file', type=Path, default=config / VBP_PARAMS,
                        help='vbp_node parameters')
    parser.add_argument('--camera-params-file', type=Path,
                        default=config / CAMERA_PARAMS, help='road_camera parameters')
    parser.add_argument('--record-params-file', type=Path,
                        default=config / RECORD_PARAMS, help='vbp_record parameters')
    options = parser.parse_args(argv)
    if options.duration < 0:
        parser.error('--duration must not be negative')
    if options.watch_live_view and not options.foxglove_port:
        parser.error('--watch-live-view needs --foxglove-port')
    problem = _name_problem(options.image_topic, options.namespace)
    if problem:
        parser.error(problem)
    for path in (options.params_file, options.camera_params_file, options.record_params_file):
        if not path.is_file():
            parser.error(f'{path} does not exist')
    return options


def _name_problem(image_topic: str, namespace: str) -> str | None:
    """Why ROS would refuse --image-topic or --namespace (in every process), or None."""
    try:
        validate_topic_name(image_topic)
    except InvalidTopicNameException as error:
        return f'--image-topic {image_topic!r}: {str(error).splitlines()[0].rstrip(":")}'
    try:
        if namespace:
            validate_namespace(namespace if namespace.startswith('/') else f'/{namespace}')
    except InvalidNamespaceException as error:
        return f'--namespace {namespace!r}: {str(error).splitlines()[0].rstrip(":")}'
    return None


def _start(children: list[Child], monitor: DriveMonitor, executor: SingleThreadedExecutor,
           awaited: list[str], stop: StopRequest) -> str | None:
    """Start recorder and node, wait until the node subscribes to the camera and the recorder
    to the node's per-frame outputs it records (``awaited``), then start the camera (whose
    first frame waits for the recorder when it records the camera), so that no frame goes
    unprocessed or unrecorded for want of a subscriber. An error text on failure."""
    camera, *listeners = children
    for child in listeners:
        child.start()
    print('vbp-drive: waiting for vbp_node' + (' and vbp_record' if len(listeners) > 1 else ''))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (monitor.subscribed_by(monitor.image_topic, VBP_NODE) and
               all(monitor.subscribed_by(topic, RECORDER_NODE) for topic in awaited)):
        if stop.requested:
            return None
        executor.spin_once(timeout_sec=0.1)
        exited = first_exited(listeners)
        if exited is not None:
            return f'{exited.name} exited at start:\n{exited.log_tail()}'
        if time.monotonic() > deadline:
            return f'vbp_node or vbp_record not ready after {STARTUP_TIMEOUT_S:.0f} s'
    camera.start()
    return None


def _run(children: list[Child], monitor: DriveMonitor, executor: SingleThreadedExecutor,
         duration: float, stop: StopRequest) -> str | None:
    """Spin and print a status line each second until ``duration`` seconds after the first
    camera frame; an error text when a process exits on its own."""
    start = next_status = None
    counts = (0, 0)
    waited_since = time.monotonic()
    while (start is None or not duration or time.monotonic() - start < duration) and \
            not stop.requested:
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if start is None and monitor.seen.camera_stamps:
            start = next_status = now
        if start is None and now - waited_since > STARTUP_TIMEOUT_S:
            return f'no camera frame after {STARTUP_TIMEOUT_S:.0f} s'
        if next_status is not None and now >= next_status:
            next_status += 1.0
            counts = _print_status(monitor, now - start, counts)
        exited = first_exited(children)
        if exited is not None:
            return f'{exited.name} exited early:\n{exited.log_tail()}'
    return None


def _print_status(monitor: DriveMonitor, elapsed: float, previous: tuple[int, int]
                  ) -> tuple[int, int]:
    seen = monitor.seen
    counts = (len(seen.camera_stamps), seen.angles)
    latency = percentiles(seen.latencies_ms[-STATUS_WINDOW:]) or {'p50': NAN, 'p99': NAN}
    drops = sum(int(value) for key, value in seen.vbp_status.items()
                if key.startswith('dropped'))
    recorded = sum(int(value) for key, value in monitor.node_status(RECORDER_NODE).items()
                   if key.startswith('written '))
    line = (f't={elapsed:5.1f} s  camera {counts[0] - previous[0]:3d} fps  vbp '
            f'{counts[1] - previous[1]:3d} fps  latency p50 {latency["p50"]:6.1f} ms p99 '
            f'{latency["p99"]:6.1f} ms  drops {drops}  recorded {recorded} messages')
    print(line, end='\r' if sys.stdout.isatty() else '\n', flush=True)
    return counts
