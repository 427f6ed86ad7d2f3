"""vbp-latency: end-to-end latency of vbp_node over DDS, publisher and node in separate processes.

Starts ``vbp_node`` (its console script) with the package's Fast DDS profile, publishes mono8
camera frames at a fixed rate stamped with the publish time, and measures for every mask
received: mask received - frame published. The node's own figures come from its debug topics:
processing time per frame (from receipt to the last publish), and the frame's age when the
node received it (pipeline latency minus processing time). Without ``--model`` it times NetSVF
(Table 1) with initial weights on the synthetic camera's road crop (640x250 of 640x480).
``--backends torch,onnxruntime`` runs the node once per backend, one after the other, and
reports each (and whether every frame sent was processed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from ..models.checkpoint import save_checkpoint
from ..models.networks import net_svf
from ..data.datasets import synthetic_spec
from ..engine.memory import keep_frame_memory
from ..engine.monitor import percentiles
from ..interface import (DIAGNOSTICS_TOPIC, FASTDDS_PROFILE, IMAGE_TOPIC, MASK_TOPIC,
                         PIPELINE_LATENCY_TOPIC, PROCESSING_TIME_TOPIC)
from ..live.client import ChannelWatcher
from ..arguments import nonnegative_int, positive_float, positive_int
from .messages import header_ns, image_message, time_message
from .paths import share


class Probe(Node):
    """Publishes frames and records what comes back: every mask's stamp and receipt time, the
    node's debug figures (with ``debug_topics``) and its newest /diagnostics counts."""

    def __init__(self, debug_topics: bool = True) -> None:
        super().__init__('vbp_latency_probe')
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.answers: list[tuple[int, int]] = []  # (mask stamp, received), ns
        self.processing_ms: list[float] = []
        self.pipeline_ms: list[float] = []
        self.create_subscription(Image, MASK_TOPIC, self._on_mask, 10)
        if debug_topics:
            self.create_subscription(Float32, PROCESSING_TIME_TOPIC,
                                     lambda m: self.processing_ms.append(m.data), 100)
            self.create_subscription(Float32, PIPELINE_LATENCY_TOPIC,
                                     lambda m: self.pipeline_ms.append(m.data), 100)
        self.published = 0  # start-up frames included
        self.node_counts: dict[str, str] = {}  # the node's newest /diagnostics
        self.node_counts_ns = 0  # and its stamp
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)

    @property
    def latencies_ms(self) -> list[float]:
        """Mask received - frame published, per mask."""
        return [(received - stamp) / 1e6 for stamp, received in self.answers]

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.endswith(': pipeline'):
                self.node_counts = {kv.key: kv.value for kv in status.values}
                self.node_counts_ns = header_ns(message.header)

    def _on_mask(self, message: Image) -> None:
        self.answers.append((header_ns(message.header), time.time_ns()))

    def publish_frame(self, image: Image) -> int:
        """Publish ``image`` stamped now; the stamp (ns)."""
        stamp = time.time_ns()
        image.header.stamp = time_message(stamp)
        self.publisher.publish(image)
        self.published += 1
        return stamp

    def counts_since(self, since_ns: int, timeout: float = 5.0) -> dict[str, str]:
        """The node's first /diagnostics counts stamped at ``since_ns`` or later (it publishes
        them every second); {} when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.node_counts_ns < since_ns and time.monotonic() < deadline:
            time.sleep(0.05)
        return dict(self.node_counts) if self.node_counts_ns >= since_ns else {}


@contextmanager
def probing(debug_topics: bool = True) -> Iterator[Probe]:
    """rclpy with the package's Fast DDS profile (which a node started in the block inherits),
    and a :class:`Probe` spinning on a thread of its own, until the block ends."""
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(share('config', FASTDDS_PROFILE))
    keep_frame_memory()  # the probe publishes every frame: as the node, it keeps the buffers
    rclpy.init()
    probe = Probe(debug_topics)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield probe
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown()


@contextmanager
def running_node(model: str, parameters: list[str], log: IO | int = subprocess.DEVNULL
                 ) -> Iterator[subprocess.Popen]:
    """vbp_node (:func:`node_script`, in this process's environment) in a process of its own
    with ``parameters`` (``NAME:=VALUE``) and its output in ``log``, until the block ends: then
    Ctrl-C, and wait for it to end (a probe still spinning gets its final /diagnostics)."""
    node = subprocess.Popen([str(node_script()), '--ros-args', '-p', f'model:={model}',
                             *[arg for p in parameters for arg in ('-p', p)]],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield node
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=15)


def node_script() -> Path:
    """The vbp_node console script that the benchmarks start: the one beside this Python."""
    return Path(sys.executable).parent / 'vbp_node'


def wait_for_answer(probe: Probe, image: Image, node: subprocess.Popen,
                    timeout: float = 60.0) -> None:
    """Publish ``image`` five times a second until the node answers (start-up, discovery);
    RuntimeError when it ends or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not probe.answers and time.monotonic() < deadline and node.poll() is None:
        probe.publish_frame(image)
        time.sleep(0.2)
    if node.poll() is not None:
        raise RuntimeError(f'vbp_node ended (exit code {node.returncode}) before it answered')
    if not probe.answers:
        raise RuntimeError(f'vbp_node did not answer within {timeout:g} s')


def stream(probe: Probe, image: Image, rate: float, duration: float) -> list[int]:
    """Publish ``rate`` x ``duration`` frames of ``image`` on the rate's schedule, each stamped
    when it is sent (a publisher that falls behind catches up); the stamps (ns)."""
    period = 1.0 / rate
    stamps: list[int] = []
    start = time.monotonic()
    for index in range(1, round(rate * duration) + 1):
        stamps.append(probe.publish_frame(image))
        time.sleep(max(0.0, start + index * period - time.monotonic()))
    return stamps


def run(model: str, rate: float, duration: float, width: int, height: int,
        node_parameters: list[str], live_port: int = 0, log: IO | int = subprocess.DEVNULL
        ) -> dict:
    """Start the node (its output in ``log``), stream frames, and return the figures. With
    ``live_port`` the node serves its live view there, and a Foxglove client subscribes to
    every channel for the second half of the run."""
    frame = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    image = image_message(frame, 'mono8')
    image.header.frame_id = 'camera'
    parameters = [f'deadline_ms:={1000.0 / rate}', *node_parameters]
    with probing() as probe:
        with running_node(model, parameters, log) as node:
            wait_for_answer(probe, image, node)
            time.sleep(1.0)
            for store in (probe.answers, probe.processing_ms, probe.pipeline_ms):
                store.clear()
            viewer = None
            if live_port:
                sent = len(stream(probe, image, rate, duration / 2))
                viewer = LiveViewer(live_port, sent, {'latency_ms': len(probe.answers),
                                                      'processing_ms': len(probe.processing_ms)})
                sent += len(stream(probe, image, rate, duration / 2))
            else:
                sent = len(stream(probe, image, rate, duration))
            time.sleep(0.5)
            live = viewer.stop() if viewer is not None else None
        count = min(len(probe.processing_ms), len(probe.pipeline_ms))
        age_at_start = np.subtract(probe.pipeline_ms[:count], probe.processing_ms[:count])
        return {'sent': sent, 'received': len(probe.answers), 'period_ms': 1000.0 / rate,
                'latency_ms': np.asarray(probe.latencies_ms),
                'processing_ms': np.asarray(probe.processing_ms), 'age_at_start_ms': age_at_start,
                'live': live, 'published': probe.published, 'node_counts': probe.node_counts}


class LiveViewer:
    """A :class:`~vbp_ros.live.client.ChannelWatcher` on the node's live view, and what had
    been sent and answered before it came."""

    def __init__(self, port: int, sent_before: int, answered_before: dict[str, int]) -> None:
        self.sent_before = sent_before  # frames sent, and figures per key, before it came
        self.answered_before = answered_before
        self.watcher = ChannelWatcher(port, {'/vbp/overlay'})

    def stop(self) -> dict:
        """What the client received: messages per channel and its seconds connected."""
        seconds, messages = self.watcher.stop()
        return {'sent_before': self.sent_before, 'answered_before': self.answered_before,
                'seconds': seconds, 'messages': messages}


def report(figures: dict) -> str:
    """The figures and the latency targets, met or missed, as lines of text."""
    latency, processing, age = (percentiles(figures[name]) for name in
                                ('latency_ms', 'processing_ms', 'age_at_start_ms'))
    period = figures['period_ms']
    median_gap = latency['p50'] - processing['p50']
    p99_gap = latency['p99'] - processing['p50']
    every = figures['received'] >= figures['sent']
    lines = [
        f'frames sent {figures["sent"]}, masks received {figures["received"]} (every frame '
        f'processed: {"yes" if every else "NO"})',
        f'mask received - frame published: median {latency["p50"]:.2f} ms, '
        f'p99 {latency["p99"]:.2f} ms, max {latency["max"]:.2f} ms',
        f'node processing time: median {processing["p50"]:.2f} ms, '
        f'p99 {processing["p99"]:.2f} ms',
        f'frame age at receipt: median {age["p50"]:.2f} ms, max {age["max"]:.2f} ms',
        f'target median latency <= processing median + 3 ms: {median_gap:+.2f} ms '
        f'({"met" if median_gap <= 3.0 else "MISSED"})',
        f'target p99 latency <= processing median + one period ({period:.1f} ms): '
        f'{p99_gap:+.2f} ms ({"met" if p99_gap <= period else "MISSED"})',
        f'target frame age at receipt always < one period: max {age["max"]:.2f} ms '
        f'({"met" if age["max"] < period else "MISSED"})',
    ]
    counts = figures['node_counts']
    if counts:
        drops = ', '.join(f'{key[len("dropped ("):-1]} {value}' for key, value in counts.items()
                          if key.startswith('dropped') and value != '0') or 'none'
        lost = figures['published'] - int(counts['frames received'])
        lines.append(f'where frames went (the whole run, start-up included): published '
                     f'{figures["published"]}, not received by the node {lost}, processed '
                     f'{counts["frames processed"]}; dropped by the node: {drops}')
    live = figures['live']
    if live is not None:
        lines += [_live_half(figures, live, watched) for watched in (False, True)]
        rates = ', '.join(f'{topic} {count / live["seconds"]:.1f} Hz'
                          for topic, count in sorted(live['messages'].items()))
        lines.append(f'live view client received: {rates}')
    return '\n'.join(lines)


def _live_half(figures: dict, live: dict, watched: bool) -> str:
    """One half of a live-view run: frames answered, node processing and end-to-end latency."""
    parts = {key: figures[key][count:] if watched else figures[key][:count]
             for key, count in live['answered_before'].items()}
    sent = figures['sent'] - live['sent_before'] if watched else live['sent_before']
    processing, latency = (percentiles(parts[key]) for key in ('processing_ms', 'latency_ms'))
    return (f'live view, {"with a client on every channel" if watched else "no client"}: '
            f'{len(parts["latency_ms"])}/{sent} masks received, processing p50 '
            f'{processing["p50"]:.2f} p99 {processing["p99"]:.2f} ms, latency p50 '
            f'{latency["p50"]:.2f} p99 {latency["p99"]:.2f} ms')


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the figures; exit code 0."""
    parser = argparse.ArgumentParser(prog='vbp-latency', description=__doc__)
    parser.add_argument('--model', help='checkpoint (default: NetSVF with initial weights)')
    parser.add_argument('--rate', type=positive_float, default=30.0,
                        help='frames per second (%(default)s)')
    parser.add_argument('--duration', type=positive_float, default=30.0,
                        help='seconds (%(default)s)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra vbp_node parameter (repeatable)')
    parser.add_argument('--backends', default='auto',
                        help='comma-separated vbp_node backends, run one after the other '
                             '(%(default)s)')
    parser.add_argument('--live-view', type=nonnegative_int, default=0, metavar='PORT',
                        help='serve the live view on PORT and measure its rate and cost: a '
                             'Foxglove client subscribes for the second half of each run')
    parser.add_argument('--width', type=positive_int, default=640)
    parser.add_argument('--height', type=positive_int, default=480)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            model = str(Path(folder) / 'netsvf.safetensors')
            save_checkpoint(model, net_svf().eval(), synthetic_spec('netsvf'))
        for backend in args.backends.split(','):
            live = [f'foxglove_port:={args.live_view}', 'foxglove_max_rate_hz:=0.0'] \
                if args.live_view else []
            log_path = Path(folder) / 'vbp_node.log'
            try:
                with log_path.open('w') as log:
                    figures = run(model, args.rate, args.duration, args.width, args.height,
                                  [*args.param, *live, f'backend:={backend}'], args.live_view,
                                  log)
            except RuntimeError as error:
                print(f'vbp-latency: {error}; the end of its output:',
                      *log_path.read_text().splitlines()[-20:], sep='\n', file=sys.stderr)
                return 1
            print(f'vbp_node, backend {backend}, mono8 {args.width}x{args.height} at '
                  f'{args.rate:g} Hz for {args.duration:g} s')
            print(report(figures))
    return 0


if __name__ == '__main__':
    sys.exit(main())
