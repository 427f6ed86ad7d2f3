"""vbp-gpu-check: the CUDA benchmarks of ``make gpu-check``, as one table.

Per network (NetSVF, NetHVF, the authors' architecture) at batch 1 and 8 on the GPU: the
forward pass alone and forward + VisualBackProp mask (CUDA-synchronised medians); and the
engine on a mono8 640x480 camera frame with its CUDA streams, CUDA graphs off and on: its stage
times (preprocess, copy, compute, postprocess) and the frame rate of submit/collect pipelining
(copy of frame N+1 overlapping compute of frame N). Exit code 2 with "no CUDA device" where
torch sees no GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from ..models.networks import build_network
from ..explain.vbp import VisualBackProp
from ..data.datasets import synthetic_spec
from ..engine.engine import VBPEngine

NETWORKS = ('netsvf', 'nethvf', 'authors')
CAMERA_SPEC = synthetic_spec('authors')


def cuda_ms(function, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``function()`` on the GPU, synchronised around each call."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def network_rows(repeats: int) -> list[tuple[str, ...]]:
    """(network, batch, forward ms, forward + mask ms, mask cost) rows."""
    rows = []
    for name in NETWORKS:
        model = build_network(name).cuda().eval()
        vbp = VisualBackProp(model)
        for batch in (1, 8):
            x = torch.rand(batch, model.in_channels, *model.input_size, device='cuda')
            with torch.inference_mode():
                forward = cuda_ms(lambda: model(x), repeats)
                masked = cuda_ms(lambda: vbp(x), repeats)
            rows.append((name, str(batch), f'{forward:.2f}', f'{masked:.2f}',
                         f'{masked - forward:+.2f}'))
        vbp.remove()
    return rows


def engine_rows(frames: int) -> list[tuple[str, ...]]:
    """(graphs, preprocess, copy, compute, postprocess, total ms, pipelined frames/s) rows."""
    frame = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    rows = []
    for graphs in (False, True):
        engine = VBPEngine(build_network('authors'), CAMERA_SPEC, device='cuda',
                           cuda_graphs=graphs)
        times = [engine.process(frame).times for _ in range(frames)]
        stages = [np.median([getattr(t, f'{stage}_ms') for t in times])
                  for stage in ('preprocess', 'transfer', 'compute', 'postprocess', 'total')]
        start = time.perf_counter()
        engine.submit(frame)
        for _ in range(frames - 1):
            engine.submit(frame)
            engine.collect()
        engine.collect()
        rate = frames / (time.perf_counter() - start)
        rows.append(('on' if graphs else 'off', *(f'{value:.2f}' for value in stages),
                     f'{rate:.0f}'))
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Rows under a header, columns right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(row, widths))
                     for row in (header, *rows))


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table; 2 without a CUDA device."""
    parser = argparse.ArgumentParser(prog='vbp-gpu-check', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=50, help='timed calls (%(default)s)')
    parser.add_argument('--frames', type=int, default=200,
                        help='engine frames per setting (%(default)s)')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print('vbp-gpu-check: no CUDA device (torch.cuda.is_available() is False): run it on '
              'a machine with an NVIDIA GPU and a CUDA build of torch', file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA '
          f'{torch.version.cuda}')
    print(table(('network', 'batch', 'forward ms', 'forward+mask ms', 'mask ms'),
                network_rows(args.repeats)))
    print()
    print('engine, authors architecture, mono8 640x480 frame, CUDA streams (medians, ms):')
    print(table(('graphs', 'preprocess', 'copy', 'compute', 'postprocess', 'total',
                 'pipelined fps'), engine_rows(args.frames)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
