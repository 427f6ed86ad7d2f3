"""vbp-bench: time the forward pass alone and the forward pass plus the VisualBackProp mask.

Methods are timed interleaved (one repetition of each in turn) so that load from other processes
affects all of them alike; medians and 90th percentiles are over the warmed-up repetitions.
Timings do not depend on the weights, so every network is timed with its initial weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import numpy as np
import torch

from ..core.networks import build_network
from ..core.vbp import VisualBackProp

NETWORKS = ('netsvf', 'nethvf', 'authors')


def time_methods(methods: dict[str, Callable[[], object]], repeats: int, warmup: int
                 ) -> dict[str, np.ndarray]:
    """Milliseconds per call of each method, interleaved."""
    times = {name: [] for name in methods}
    for _ in range(warmup):
        for run in methods.values():
            run()
    for _ in range(repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(values) for name, values in times.items()}


def bench_network(network: str, batch: int, repeats: int, warmup: int) -> list[dict]:
    """Records for forward and forward+VBP of one network at one batch size on the CPU."""
    plain = build_network(network).eval()
    hooked = build_network(network).eval()
    x = torch.rand(batch, plain.in_channels, *plain.input_size)
    with VisualBackProp(hooked) as vbp, torch.inference_mode():
        times = time_methods({'forward': lambda: plain(x), 'vbp': lambda: vbp(x)},
                             repeats, warmup)
    return [{'network': network, 'batch': batch, 'device': 'cpu', 'method': method,
             'median_ms': float(np.median(values)), 'p90_ms': float(np.percentile(values, 90))}
            for method, values in times.items()]


def format_table(records: list[dict]) -> str:
    """Records as a text table, with the mask's cost relative to the forward pass."""
    lines = [f'{"network":<9}{"batch":>6}{"device":>8}{"method":>10}{"median ms":>12}'
             f'{"p90 ms":>10}{"vs forward":>12}']
    forward = {(r['network'], r['batch'], r['device']): r['median_ms'] for r in records
               if r['method'] == 'forward'}
    for r in records:
        base = forward.get((r['network'], r['batch'], r['device']))
        extra = (f'{100.0 * (r["median_ms"] / base - 1.0):+.1f}%'
                 if base and r['method'] != 'forward' else '')
        lines.append(f'{r["network"]:<9}{r["batch"]:>6}{r["device"]:>8}{r["method"]:>10}'
                     f'{r["median_ms"]:>12.2f}{r["p90_ms"]:>10.2f}{extra:>12}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='vbp-bench', description=__doc__)
    parser.add_argument('--networks', default='netsvf',
                        help=f'comma-separated, from {",".join(NETWORKS)} (%(default)s)')
    parser.add_argument('--batches', default='1,8', help='comma-separated (%(default)s)')
    parser.add_argument('--repeats', type=int, default=50, help='timed repetitions (%(default)s)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed repetitions (%(default)s)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (0: torch default)')
    parser.add_argument('--json', metavar='PATH', help='also write the records as JSON')
    args = parser.parse_args(argv)
    networks = args.networks.split(',')
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        parser.error(f'unknown networks: {", ".join(unknown)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    records = [record for network in networks for batch in map(int, args.batches.split(','))
               for record in bench_network(network, batch, args.repeats, args.warmup)]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads')
    print(format_table(records))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(records, handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
