"""vbp-bench: time the forward pass alone and with each mask method of the explainer table
(VisualBackProp, LRP-epsilon, Grad-CAM), captum's LRP-epsilon (the reference library), and
VisualBackProp's mask alone (``vbp_mask``: the scale-ups and products recomputed from the maps the
keepers filled in the last pass; the rest of VisualBackProp's extra time is those keepers, one
channel sum per kept tensor, and call overhead). Networks: the paper's and the zoo
(``--networks zoo``). With ``--backends torch,onnxruntime`` also the forward pass and forward +
VisualBackProp in ONNX Runtime (the mask inside the graph), and how much faster each is than
eager torch.

Methods are timed interleaved (one repetition of each in turn, over every backend) so that load
from other processes affects all of them alike; medians and 90th percentiles are over the
warmed-up repetitions. Timings do not depend on the weights, so every network is timed with its
initial weights.

``--mask-cost`` prints issue 19's figure instead: what VisualBackProp's mask adds to the forward
pass, in torch and inside the onnxruntime graph, at one thread and batch 1, as % of the forward
pass: the median over rounds of (forward + mask) - forward timed back to back, per repetition,
and the best of the repetitions against the target, met or MISSED. ``--clock cpu`` times the
calling thread's CPU time, which waiting for the cores of a shared machine does not inflate.

``--attention`` prints issue 23's figure instead: what vbp_node's attention statistics
(:mod:`vbp_ros.explain.attention`, with the alarm) cost per frame at the bundled model's mask
resolution, on its masks of a synthetic drive, median and 99th percentile, against the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..arguments import comma_separated, nonnegative_int, positive_int
from ..models.checkpoint import ModelSpec
from ..explain.explainers import EXPLAINERS, explainer
from ..models.networks import ARCHITECTURES, ZOO, build_network
from ..explain.reference import ReferenceLRP
from ..explain.rules import UnsupportedModelError
from ..data.datasets import synthetic_spec
from ..data.sources import synthetic_frames
from ..engine.attention_health import AttentionSettings, AttentionTracker
from ..engine.build import build_engine
from ..engine.config import BACKENDS
from ..engine.engine import VBPEngine
from ..engine.onnx_backend import OnnxRuntimeNetwork, export_onnx
from ..engine.timing import paired_extra_ms, time_methods
from ..pixels.overlay import DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH, draw_overlay

NETWORKS = tuple(ARCHITECTURES)
RECORD_KEYS = ('network', 'batch', 'device', 'backend', 'method', 'median_ms', 'p90_ms',
               'mask_ms')
METHODS = ('forward', *EXPLAINERS, 'vbp_mask', 'lrp_reference')
ONNXRUNTIME_METHODS = ('forward', 'vbp')  # what the onnxruntime backend runs
# What --clock reads, and how the tables name it.
CLOCKS = {'wall': (time.perf_counter, 'wall-clock time'),
          'cpu': (time.thread_time, "the calling thread's CPU time")}
#: Issue 19's targets for the mask's cost, % of the forward pass, by (backend, network).
MASK_TARGETS: dict[tuple[str, str], float] = {
    ('onnxruntime', 'netsvf'): 10.0, ('onnxruntime', 'pilotnet_elu'): 10.0,
    ('onnxruntime', 'resnet18'): 5.0, ('onnxruntime', 'mobilenet_v2'): 5.0,
    ('torch', 'netsvf'): 5.0}
ATTENTION_BUDGET_MS = 0.5  # issue 23: the statistics' cost per frame on this CPU
MASK_COST_NETWORKS = ('netsvf', 'pilotnet_elu', 'resnet18', 'mobilenet_v2')
# The forward pass and forward + mask of each backend, as named by the runners below.
MASK_COST_METHODS = {'torch': ('forward', 'vbp'),
                     'onnxruntime': ('forward[onnxruntime]', 'vbp[onnxruntime]')}


def method_runners(network: str, x: torch.Tensor, methods: Sequence[str]
                   ) -> tuple[dict[str, Callable[[], object]], list[Callable[[], None]],
                              dict[str, str]]:
    """One callable per method, each on its own copy of the network, plus clean-ups and the
    methods the network refuses (with the reason)."""
    runners: dict[str, Callable[[], object]] = {}
    cleanups: list[Callable[[], None]] = []
    refused: dict[str, str] = {}

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_network(network).eval()

    for method in methods:
        try:
            if method == 'forward':
                plain = fresh()
                runners[method] = lambda plain=plain: _inference(plain, x)
            elif method == 'lrp_reference':
                reference = ReferenceLRP(fresh(), epsilon=100.0)
                runners[method] = lambda reference=reference: reference(x, target=0)
            elif method == 'vbp_mask':
                runners[method] = _mask_alone(fresh(), x, cleanups)
            else:
                explain = explainer(method, fresh())
                _inference(explain, x)  # reads the network; refusals show here
                runners[method] = lambda explain=explain: _inference(explain, x)
                cleanups.append(explain.remove)
        except UnsupportedModelError as error:
            refused[method] = str(error)
    return runners, cleanups, refused


def _mask_alone(model: torch.nn.Module, x: torch.Tensor, cleanups: list) -> Callable[[], object]:
    """VisualBackProp's mask recomputed from the maps of its last pass (its internal plan)."""
    vbp = explainer('vbp', model)
    _inference(vbp, x)
    cleanups.append(vbp.remove)
    plan = vbp._last
    return lambda: _inference(lambda _: plan.run(None), x)


def onnxruntime_runners(network: str, x: torch.Tensor, methods: Sequence[str], threads: int = 0
                        ) -> dict[str, Callable[[], object]]:
    """The forward pass and forward + in-graph mask in ONNX Runtime (the network exported in
    memory, as the engine's onnxruntime backend runs it), keyed 'method[onnxruntime]'."""
    torch.manual_seed(0)
    graph = export_onnx(build_network(network).eval(), tuple(x.shape[1:]))
    spec = ModelSpec(network, *x.shape[1:])
    array = x.numpy()
    runners = {}
    for method in ONNXRUNTIME_METHODS:
        if method in methods:
            session = OnnxRuntimeNetwork(graph, spec, device='cpu', threads=threads,
                                         with_mask=method == 'vbp')
            runners[f'{method}[onnxruntime]'] = lambda session=session: session(array)
    return runners


def _inference(function: Callable[[torch.Tensor], object], x: torch.Tensor) -> object:
    with torch.inference_mode():
        return function(x)


def bench_network(network: str, batch: int, methods: Sequence[str], repeats: int,
                  warmup: int, backends: Sequence[str] = ('torch',), threads: int = 0,
                  clock: str = 'wall') -> list[dict]:
    """Records for each method and backend of one network at one batch size on the CPU
    (``threads``: onnxruntime's intra-op threads, 0 for its default; ``clock``: a key of
    :data:`CLOCKS`)."""
    probe = build_network(network)
    x = torch.rand(batch, probe.in_channels, *probe.input_size)
    runners, cleanups, refused = (method_runners(network, x, methods) if 'torch' in backends
                                  else ({}, [], {}))
    if 'onnxruntime' in backends:
        runners.update(onnxruntime_runners(network, x, methods, threads))
    times = time_methods(runners, repeats, warmup, clock=CLOCKS[clock][0])
    for cleanup in cleanups:
        cleanup()
    for method, reason in refused.items():
        print(f'{network}: {method} refused: {reason}', file=sys.stderr)
    records = []
    for name, values in times.items():
        method, _, backend = name.partition('[')
        backend = backend.rstrip(']') or 'torch'
        forward = times.get('forward' if backend == 'torch' else f'forward[{backend}]')
        records.append({'network': network, 'batch': batch, 'device': 'cpu', 'backend': backend,
                        'method': method, 'median_ms': float(np.median(values)),
                        'p90_ms': float(np.percentile(values, 90)),
                        'mask_ms': (float(np.median(values)) if method == 'vbp_mask'
                                    else paired_extra_ms(values, forward))})
    return records


def speedups(records: list[dict]) -> list[str]:
    """onnxruntime against eager torch, per network and batch: forward, and forward + mask
    (VisualBackProp in the graph against VisualBackProp in torch)."""
    by_key = {(r['network'], r['batch'], r['backend'], r['method']): r['median_ms']
              for r in records}
    lines = []
    for network, batch in dict.fromkeys((r['network'], r['batch']) for r in records):
        parts = []
        for method, label in (('forward', 'forward'), ('vbp', 'forward+mask')):
            torch_ms = by_key.get((network, batch, 'torch', method))
            onnx_ms = by_key.get((network, batch, 'onnxruntime', method))
            if torch_ms and onnx_ms:
                parts.append(f'{label} {torch_ms / onnx_ms:.1f}x')
        if parts:
            lines.append(f'onnxruntime vs torch, {network} batch {batch}: {", ".join(parts)} '
                         'faster')
    return lines


def engine_stages(frames: int, backend: str = 'torch') -> str:
    """Per-stage medians of the engine on a mono8 640x480 frame with NetSVF (CPU), and its
    postprocessing with the overlay that vbp_node's pipeline then draws."""
    engine = VBPEngine(build_network('netsvf'), synthetic_spec('netsvf'), device='cpu',
                       backend=backend)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    region = engine.preprocess.region(frame.shape)
    stages = {'preprocess': [], 'transfer': [], 'compute': [], 'postprocess': [], 'total': []}
    overlay_total, overlay = [], None
    for _ in range(frames):
        times = engine.process(frame).times
        for name, values in stages.items():
            values.append(getattr(times, f'{name}_ms'))
        result = engine.process(frame)
        start = time.perf_counter()
        overlay = draw_overlay(frame, 'rgb', region, result.mask, DEFAULT_OVERLAY_ALPHA,
                               DEFAULT_OVERLAY_WIDTH, out=overlay)
        drawn_ms = (time.perf_counter() - start) * 1e3
        overlay_total.append(result.times.postprocess_ms + drawn_ms)
    parts = ', '.join(f'{name} {np.median(values):.2f}' for name, values in stages.items())
    return (f'engine, NetSVF, mono8 640x480, {engine.description}: median ms: {parts}; '
            f'postprocess with overlay {np.median(overlay_total):.2f}')


def engine_cameras(cameras: int, rounds: int, backend: str = 'torch') -> str:
    """Per-frame cost of ``cameras`` frames (NetSVF, RGB 640x480, CPU) through the engine as
    one batch, as vbp_node runs several cameras, against one forward pass per frame; timed
    interleaved, round by round, on one engine."""
    engine = VBPEngine(build_network('netsvf'), synthetic_spec('netsvf'), device='cpu',
                       backend=backend, max_batch=cameras)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(cameras)]
    runs = {'batched': lambda: engine.process_batch(frames),
            'separate': lambda: [engine.process(frame) for frame in frames]}
    times = time_methods(runs, rounds, warmup=3)
    batched, separate = (np.median(times[name]) / cameras for name in ('batched', 'separate'))
    return (f'engine, NetSVF, {cameras} cameras of RGB 640x480, {engine.description}: '
            f'{batched:.2f} ms a frame as one batch, {separate:.2f} ms a frame in separate '
            f'forward passes ({separate / batched:.2f}x)')


def mask_cost_percent(with_mask: np.ndarray, forward: np.ndarray) -> float:
    """The mask's cost as % of the forward pass: the median over rounds of (forward + mask) -
    forward, timed back to back, over the median forward pass (milliseconds in both)."""
    return 100.0 * paired_extra_ms(with_mask, forward) / float(np.median(forward))


@dataclass(frozen=True)
class MaskCost:
    """The mask's cost on one network and backend, one figure per repetition."""

    network: str
    backend: str
    forward_ms: tuple[float, ...]  # median forward pass, per repetition
    percents: tuple[float, ...]  # mask_cost_percent, per repetition

    @property
    def best(self) -> float:
        """The lowest cost of the repetitions (the one least disturbed by other load)."""
        return min(self.percents)

    @property
    def target(self) -> float | None:
        """Issue 19's target, where it sets one."""
        return MASK_TARGETS.get((self.backend, self.network))

    @property
    def verdict(self) -> str:
        """'met' or 'MISSED' against the target; '' without one."""
        if self.target is None:
            return ''
        return 'met' if self.best <= self.target else 'MISSED'


def mask_costs(network: str, repetitions: int, rounds: int, warmup: int,
               clock: str = 'wall') -> list[MaskCost]:
    """The mask's cost in torch and in the onnxruntime graph on one network, at one thread
    (torch's threads must already be set to one) and batch 1: ``repetitions`` times, each
    timing a backend's forward pass and forward + mask interleaved over ``rounds`` rounds.
    The backends take turns but are not interleaved with each other: a forward pass timed
    right after the other backend's run would find the caches emptied by it, and the mask's
    cost would come out too low."""
    probe = build_network(network)
    x = torch.rand(1, probe.in_channels, *probe.input_size)
    runners, cleanups, refused = method_runners(network, x, ('forward', 'vbp'))
    runners.update(onnxruntime_runners(network, x, ONNXRUNTIME_METHODS, threads=1))
    for method, reason in refused.items():
        print(f'{network}: {method} refused: {reason}', file=sys.stderr)
    backends = {backend: names for backend, names in MASK_COST_METHODS.items()
                if all(name in runners for name in names)}
    runs = {backend: [] for backend in backends}
    for _ in range(repetitions):
        for backend, names in backends.items():
            runs[backend].append(time_methods({name: runners[name] for name in names}, rounds,
                                              warmup, clock=CLOCKS[clock][0]))
    for cleanup in cleanups:
        cleanup()
    return [MaskCost(network, backend,
                     tuple(float(np.median(times[forward])) for times in runs[backend]),
                     tuple(mask_cost_percent(times[with_mask], times[forward])
                           for times in runs[backend]))
            for backend, (forward, with_mask) in backends.items()]


def format_mask_costs(costs: list[MaskCost], rounds: int, clock: str) -> str:
    """The costs as a table: per repetition, the best, the target and whether it is met."""
    repetitions = max((len(c.percents) for c in costs), default=0)
    lines = [f'VisualBackProp mask cost as % of the forward pass: median of paired differences '
             f'((forward + mask) - forward, back to back), best of {repetitions} repetitions '
             f'of {rounds} rounds; one thread, batch 1, {CLOCKS[clock][1]}',
             f'{"network":<14}{"backend":<13}{"forward ms":>11}  {"repetitions %":<22}'
             f'{"best %":>7}{"target %":>10}  verdict']
    for cost in costs:
        target = '-' if cost.target is None else f'{cost.target:.0f}'
        runs = ' '.join(f'{p:.1f}' for p in cost.percents)
        lines.append(f'{cost.network:<14}{cost.backend:<13}'
                     f'{float(np.median(cost.forward_ms)):>11.2f}  {runs:<22}'
                     f'{cost.best:>7.1f}{target:>10}  {cost.verdict}')
    return '\n'.join(lines)


def format_table(records: list[dict]) -> str:
    """Records as a text table, with each mask's own cost (paired against the forward pass),
    that cost relative to the forward pass, and how many times VisualBackProp's it is."""
    lines = [f'{"network":<13}{"batch":>6}{"device":>8}{"backend":>13}{"method":>15}'
             f'{"median ms":>11}{"p90 ms":>10}{"mask ms":>10}{"vs fwd":>9}{"x VBP mask":>12}']
    by_key = {(r['network'], r['batch'], r['device'], r['backend'], r['method']): r
              for r in records}
    for r in records:
        key = (r['network'], r['batch'], r['device'], r['backend'])
        forward, vbp = by_key.get((*key, 'forward')), by_key.get((*key, 'vbp'))
        mask = r.get('mask_ms')
        columns = ['', '', '']
        if mask is not None:
            columns[0] = f'{mask:.2f}'
            if forward:
                columns[1] = f'{100.0 * mask / forward["median_ms"]:+.1f}%'
            if vbp and r['method'] not in ('vbp', 'vbp_mask') and vbp['mask_ms'] and (
                    vbp['mask_ms'] > 0):
                columns[2] = f'{mask / vbp["mask_ms"]:.0f}x'
        lines.append(f'{r["network"]:<13}{r["batch"]:>6}{r["device"]:>8}{r["backend"]:>13}'
                     f'{r["method"]:>15}'
                     f'{r["median_ms"]:>11.2f}{r["p90_ms"]:>10.2f}{columns[0]:>10}'
                     f'{columns[1]:>9}{columns[2]:>12}')
    return '\n'.join(lines)


def attention_cost(frames: int, rounds: int, clock: str) -> str:
    """Issue 23's figure: the time of one frame's attention statistics and alarm update,
    as vbp_node's worker runs them, over ``rounds`` passes through the bundled model's masks of
    ``frames`` frames of a synthetic drive (the set-up is built before the timing)."""
    engine = build_engine(None, device='cpu', threads=1)
    drive = synthetic_frames(seed=4, drive_rate_hz=20.0)
    images = [next(drive)[0] for _ in range(frames)]
    masks = [engine.process(image).mask for image in images]
    engine.close()
    region, shape = engine.preprocess.region(images[0].shape), images[0].shape
    tracker, settings, read = AttentionTracker(), AttentionSettings(), CLOCKS[clock][0]
    tracker.measure('', masks[-1], region, shape, settings)
    times = []
    for mask in masks * rounds:
        start = read()
        tracker.measure('', mask, region, shape, settings)
        times.append((read() - start) * 1e3)
    median, p99 = np.median(times), np.percentile(times, 99)
    verdict = 'met' if median <= ATTENTION_BUDGET_MS else 'MISSED'
    return (f'attention statistics per frame ({masks[0].shape[1]}x{masks[0].shape[0]} mask, '
            f'{CLOCKS[clock][1]}, {len(times)} frames): median {median:.3f} ms, p99 {p99:.3f} '
            f'ms; budget {ATTENTION_BUDGET_MS} ms: {verdict}')


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table (and writes --json); exit code 0."""
    parser = argparse.ArgumentParser(prog='vbp-bench', description=__doc__)
    parser.add_argument('--methods', default=','.join(METHODS),
                        help='comma-separated, from %(default)s')
    parser.add_argument('--engine-frames', type=nonnegative_int, default=30,
                        help='frames for the engine stage breakdown (0: skip)')
    parser.add_argument('--cameras', type=nonnegative_int, default=3,
                        help='cameras for the batched-against-separate engine figure (0: skip)')
    parser.add_argument('--networks', default=None,
                        help=f'comma-separated, from {",".join(NETWORKS)}, or zoo for '
                        f'{",".join(ZOO)} (netsvf; with --mask-cost '
                        f'{",".join(MASK_COST_NETWORKS)})')
    parser.add_argument('--batches', type=comma_separated(positive_int), default='1,8',
                        help='comma-separated (%(default)s)')
    parser.add_argument('--repeats', type=positive_int, default=50,
                        help='timed repetitions (%(default)s)')
    parser.add_argument('--warmup', type=nonnegative_int, default=5,
                        help='untimed repetitions (%(default)s)')
    parser.add_argument('--backends', default='torch',
                        help='comma-separated, from torch,onnxruntime (%(default)s); '
                             'onnxruntime runs forward and vbp')
    parser.add_argument('--threads', type=nonnegative_int, default=0,
                        help='torch and onnxruntime CPU threads (0: their default, one per '
                             'physical core)')
    parser.add_argument('--clock', choices=sorted(CLOCKS), default='wall',
                        help="wall time, or the calling thread's CPU time (%(default)s)")
    parser.add_argument('--mask-cost', action='store_true',
                        help="only issue 19's figure: the mask's cost as %% of the forward "
                             'pass in torch and onnxruntime, one thread, batch 1, best of '
                             '--repetitions, against the targets')
    parser.add_argument('--repetitions', type=positive_int, default=3,
                        help='with --mask-cost: repetitions of --repeats rounds (%(default)s)')
    parser.add_argument('--attention', action='store_true',
                        help="only issue 23's figure: vbp_node's attention statistics per "
                             'frame on the bundled model\'s masks (--engine-frames frames, '
                             '--repeats passes)')
    parser.add_argument('--json', metavar='PATH', help='also write the records as JSON')
    args = parser.parse_args(argv)
    if args.attention:
        if not args.engine_frames:
            parser.error('--attention times the masks of --engine-frames frames: give 1 or more')
        print(attention_cost(args.engine_frames, args.repeats, args.clock))
        return 0
    default_networks = ','.join(MASK_COST_NETWORKS) if args.mask_cost else 'netsvf'
    networks = [n for name in (args.networks or default_networks).split(',')
                for n in (ZOO if name == 'zoo' else (name,))]
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        parser.error(f'unknown networks: {", ".join(unknown)}')
    if args.mask_cost:
        torch.set_num_threads(1)
        costs = [cost for network in networks for cost in mask_costs(
            network, args.repetitions, args.repeats, args.warmup, args.clock)]
        print(format_mask_costs(costs, args.repeats, args.clock))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods.split(',')
    if set(methods) - set(METHODS):
        parser.error(f'unknown methods: {", ".join(sorted(set(methods) - set(METHODS)))}')
    backends = args.backends.split(',')
    unknown = sorted(set(backends) - set(BACKENDS) | {'auto'} & set(backends))
    if unknown:
        parser.error(f'unknown backends: {", ".join(unknown)} (torch, onnxruntime)')
    records = [record for network in networks for batch in args.batches
               for record in bench_network(network, batch, methods, args.repeats, args.warmup,
                                           backends, args.threads, args.clock)]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads')
    print(format_table(records))
    print('\n'.join(speedups(records)))
    for backend in backends if args.engine_frames else ():
        print(engine_stages(args.engine_frames, backend))
        if args.cameras:
            print(engine_cameras(args.cameras, args.engine_frames, backend))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump([{key: r[key] for key in RECORD_KEYS} for r in records], handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
