"""vbp-ceiling: the node's ceiling, the highest camera rate vbp_node keeps up with when its
network costs next to nothing (what a GPU makes of a steering CNN).

For each frame size, starts ``vbp_node`` (the console script beside this Python, in this
environment, PYTHONPATH included) with the near-free network (:mod:`vbp_ros.bench.ceiling`:
two small convolutions on a 3x32x32 RGB input, no crop, so any frame is resized whole),
written with its card to a temporary checkpoint, or with ``--model``. It then publishes one
preallocated rgb8 frame (only the stamp changes) at rising rates, each for a warm-up and then
a timed window, and reports per rate: frames sent and the rate the publisher reached, frames
answered (masks whose stamp is that of a frame sent in the window), the rate answered, the
node's CPU time per frame answered (user plus system time of the node process, all threads,
DDS included, over the window and its drain), the latency (mask received - frame stamp) and
where the other frames went by the node's /diagnostics. The node's ``deadline_ms`` is set to
each rate's period. Then the ceiling and the overload figure. One node serves every rate of a
size; its counts are taken as differences around each window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import Image

from ..bench.ceiling import (RateFigures, RateRun, near_free_network, near_free_spec,
                             process_cpu_seconds, rate_figures, size_report, skip_reason)
from ..models.checkpoint import save_checkpoint
from ..arguments import comma_separated, nonnegative_float, positive_float, positive_int
from ..interface import VBP_NODE
from .latency_bench import Probe, node_script, probing, running_node, stream, wait_for_answer
from .messages import image_message

DRAIN_S = 0.5  # after the last frame of a window: the node answers it, the counts settle


def measure_size(model: str, width: int, height: int, rates: list[float], duration: float,
                 warmup: float, parameters: list[str], log: Path
                 ) -> tuple[list[RateFigures], list[tuple[float, str]]]:
    """Start the node and run each rate in turn (those worth it, :func:`skip_reason`) on
    rgb8 frames of ``width`` x ``height``; the figures and the rates skipped, with why."""
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = image_message(pixels, 'rgb8')
    image.header.frame_id = 'camera'
    figures: list[RateFigures] = []
    skipped: list[tuple[float, str]] = []
    with probing(debug_topics=False) as probe, open(log, 'w') as output, \
            running_node(model, parameters, output) as node:
        wait_for_answer(probe, image, node)
        parameter_client = AsyncParameterClient(probe, VBP_NODE)
        for rate in rates:
            reason = skip_reason(rate, figures)
            if reason:
                skipped.append((rate, reason))
                continue
            set_deadline(parameter_client, 1000.0 / rate)
            figures.append(rate_figures(measure_rate(probe, node.pid, image, rate, duration,
                                                     warmup)))
    return figures, skipped


def measure_rate(probe: Probe, pid: int, image: Image, rate: float, duration: float,
                 warmup: float) -> RateRun:
    """A warm-up at ``rate``, a pause for the node's counts, then the timed window."""
    stream(probe, image, rate, warmup)
    time.sleep(DRAIN_S)
    before = probe.counts_since(time.time_ns())
    probe.answers.clear()
    cpu_start, start = process_cpu_seconds(pid), time.monotonic()
    stamps = stream(probe, image, rate, duration)
    send_seconds = time.monotonic() - start
    time.sleep(DRAIN_S)
    cpu_seconds, window = process_cpu_seconds(pid) - cpu_start, time.monotonic() - start
    after = probe.counts_since(time.time_ns())
    return RateRun(rate, stamps, send_seconds, list(probe.answers), cpu_seconds, window,
                   before, after)


def set_deadline(client: AsyncParameterClient, deadline_ms: float,
                 timeout: float = 10.0) -> None:
    """Set the node's ``deadline_ms`` through its parameter service; RuntimeError when the
    node refuses it or does not answer."""
    if not client.wait_for_services(timeout):
        raise RuntimeError('vbp_node offers no parameter services')
    future = client.set_parameters([Parameter('deadline_ms', value=deadline_ms)])
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    result = future.result() if future.done() else None
    if result is None or not result.results[0].successful:
        reason = result.results[0].reason if result else 'no answer'
        raise RuntimeError(f'vbp_node did not take deadline_ms {deadline_ms:g}: {reason}')


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: ``640x480`` -> (640, 480)."""
    width, _, height = text.partition('x')
    try:
        return positive_int(width), positive_int(height)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f'{text!r} is not WIDTHxHEIGHT in pixels, e.g. '
                                         '640x480') from None


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the figures of each frame size; exit code 0 (1 when the node
    failed, with the end of its output)."""
    parser = argparse.ArgumentParser(prog='vbp-ceiling', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=comma_separated(frame_size),
                        default='640x480,1920x1080',
                        help='rgb8 frame sizes, comma-separated (%(default)s)')
    parser.add_argument('--rates', type=comma_separated(positive_float),
                        default='30,60,120,240,480',
                        help='input rates in Hz, comma-separated, run rising (%(default)s)')
    parser.add_argument('--duration', type=positive_float, default=10.0,
                        help='seconds timed per rate (%(default)s)')
    parser.add_argument('--warmup', type=nonnegative_float, default=2.0,
                        help='seconds at each rate before the timed window (%(default)s)')
    parser.add_argument('--model', help='checkpoint or ONNX model (default: the near-free '
                                        'network)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra vbp_node parameter (repeatable)')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            model = str(Path(folder) / 'near_free.safetensors')
            save_checkpoint(model, near_free_network(), near_free_spec())
        print(f'vbp-ceiling: {node_script()} ({running_what()}), model '
              f'{args.model or "the near-free network"}; {args.warmup:g} s warm-up and '
              f'{args.duration:g} s timed per rate', flush=True)
        for width, height in args.sizes:
            log = Path(folder) / 'vbp_node.log'
            try:
                figures, skipped = measure_size(model, width, height, sorted(args.rates),
                                                args.duration, args.warmup, args.param, log)
            except RuntimeError as error:
                print(f'{error}; the end of its output:', *log.read_text().splitlines()[-20:],
                      sep='\n', file=sys.stderr)
                return 1
            print(f'rgb8 {width}x{height} ({width * height * 3 / 1e6:.1f} MB a frame):')
            print(*(f'  {line}' for line in size_report(figures, skipped)), sep='\n',
                  flush=True)
    return 0


def running_what() -> str:
    """Which vbp_ros the node runs: the PYTHONPATH it inherits, or the installed package."""
    path = os.environ.get('PYTHONPATH')
    return f'PYTHONPATH={path}' if path else 'the installed vbp_ros'


if __name__ == '__main__':
    sys.exit(main())
