"""vbp-fleet-bench: how fast vbp-fleet runs here, measured against the engine in the same run.

Writes a drive bag (synthetic roads, 30 Hz, mono8 640x480, MCAP; 600 frames = 20 s by
default), then measures, in this order and in one process:

  fleet       the Ray pipeline (reader tasks, model actors) on a bag of --grid-frames frames,
              at each batch size x worker count, from the moment its actors are ready; as a
              ratio to the engine's own batched speed at that batch size, the mean of one
              measurement right before and one right after (VBPEngine.process_batch on
              decoded frames in this process: the same preprocessing and network, no Ray)
  compare     the same pipeline with --compare (a second model on every frame: the bundled
              model again, so twice the network work) against the single-model run, paired
              runs at batch 8 with 1 worker alternating (--compare-runs pairs), medians
  end to end  the vbp-fleet command on the whole bag at its defaults, wall time from its start
              (Python, Ray start, model load, reading, writing Parquet and the report)

Frames/s are comparable within one run only: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from ..interface import json_text
from ..models.checkpoint import default_model_path
from ..models.loading import load_model
from ..data.camera_bags import CameraFrame, write_camera_bag
from ..fleet.cluster import ClusterOptions, FleetJob, FleetRunner, start_ray, stop_ray
from ..fleet.comparison import CompareJob
from ..data.fleet.reading import ReadOptions
from ..data.sources import synthetic_frames
from ..engine.build import build_engine

T0 = 1_700_000_000_000_000_000
RATE_HZ = 30.0


def write_drive(path: Path, frames: int) -> list:
    """Write a drive bag of ``frames`` frames at 30 Hz; returns the frames."""
    drive = synthetic_frames(seed=11, drive_rate_hz=RATE_HZ)
    pixels = [next(drive)[0] for _ in range(frames)]
    period = round(1e9 / RATE_HZ)
    write_camera_bag(path, [CameraFrame(T0 + i * period, T0 + i * period + 2_000_000, p)
                            for i, p in enumerate(pixels)])
    return pixels


def engine_speed(frames: list, batch: int, count: int) -> float:
    """Frames/s of the engine's own batched processing of decoded frames."""
    engine = build_engine(None, device='cpu', max_batch=batch)  # as vbp-fleet's workers do
    done, start = 0, time.perf_counter()
    while done < count:
        engine.process_batch(frames[done % len(frames):][:batch])
        done += batch
    return done / (time.perf_counter() - start)


def fleet_speed(bag: str, batch: int, workers: int, compare: bool = False) -> float:
    """Frames/s of the Ray pipeline over a bag, from the moment its actors are ready; with
    ``compare``, each frame also through a second copy of the bundled model (--compare)."""
    _, spec = load_model(None)
    read = ReadOptions(segment_inputs=max(batch, 64 // batch * batch))
    other = CompareJob(str(default_model_path()), None, spec) if compare else None
    runner = FleetRunner(FleetJob(None, spec, 'cpu', batch, read, 4, other),
                         ClusterOptions(workers=workers))
    runner.ready()
    outcomes = []
    start = time.perf_counter()
    runner.run([bag], outcomes.append)
    elapsed = time.perf_counter() - start
    (outcome,) = outcomes
    if outcome.error:
        raise RuntimeError(outcome.error)
    for actor in runner.actors:
        ray.kill(actor)
    return sum(len(r.rows['index']) for r in outcome.results) / elapsed


def compare_speeds(bag: str, runs: int) -> dict:
    """Paired single-model and --compare runs (batch 8, 1 worker), alternating; medians."""
    single, compared = [], []
    for _ in range(runs):
        single.append(fleet_speed(bag, 8, 1))
        compared.append(fleet_speed(bag, 8, 1, compare=True))
    figures = {'runs': runs, 'single_fps': single, 'compare_fps': compared,
               'single_median_fps': statistics.median(single),
               'compare_median_fps': statistics.median(compared)}
    figures['ratio'] = figures['compare_median_fps'] / figures['single_median_fps']
    print(f'--compare, batch 8, 1 worker: {figures["compare_median_fps"]:.1f} frames/s against '
          f'{figures["single_median_fps"]:.1f} for one model (medians of {runs} paired runs): '
          f'{figures["ratio"]:.0%}', flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table and writes --json."""
    parser = argparse.ArgumentParser(prog='vbp-fleet-bench', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=600, help='frames of the drive bag')
    parser.add_argument('--grid-frames', type=int, default=192,
                        help='frames of the bag of the fleet measurements (default: %(default)s)')
    parser.add_argument('--engine-frames', type=int, default=96,
                        help='frames per engine measurement (default: %(default)s)')
    parser.add_argument('--batches', default='1,8,32')
    parser.add_argument('--workers', default='1,2')
    parser.add_argument('--compare-runs', type=int, default=3, metavar='N',
                        help='paired single-model and --compare runs (default: %(default)s)')
    parser.add_argument('--json', type=Path, help='write the figures here')
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(',')]
    worker_counts = [int(w) for w in args.workers.split(',')]
    with tempfile.TemporaryDirectory(prefix='vbp-fleet-bench-') as folder:
        root = Path(folder)
        pixels = write_drive(root / 'drive', args.frames)
        write_drive(root / 'grid', args.grid_frames)
        figures: dict = {'frames': args.frames, 'grid': []}
        start_ray(ClusterOptions(workers=max(worker_counts)))
        try:
            fleet_speed(str(root / 'grid'), batches[0], 1)  # readers' imports, untimed
            for workers in worker_counts:
                for batch in batches:
                    before = engine_speed(pixels, batch, args.engine_frames)
                    fleet = fleet_speed(str(root / 'grid'), batch, workers)
                    engine = (before + engine_speed(pixels, batch, args.engine_frames)) / 2
                    figures['grid'].append({'batch': batch, 'workers': workers,
                                            'fleet_fps': fleet, 'engine_fps': engine})
                    print(f'batch {batch:2d}, {workers} worker(s): fleet {fleet:6.1f} frames/s, '
                          f'engine {engine:6.1f} frames/s: {fleet / engine:.0%}', flush=True)
            if args.compare_runs:
                figures['compare'] = compare_speeds(str(root / 'grid'), args.compare_runs)
        finally:
            stop_ray()
        start = time.perf_counter()
        result = subprocess.run([sys.executable, '-m', 'vbp_ros.tools.fleet',
                                 str(root / 'drive'), '--out', str(root / 'out'),
                                 '--no-progress'], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            return 1
        summary = json.loads((root / 'out' / 'summary.json').read_text())
        figures['end_to_end'] = {'wall_s': wall, 'frames': summary['frames'],
                                 'ray_start_s': summary['ray']['start_s'],
                                 'processing_s': summary['processing_s'],
                                 'frames_per_s': summary['frames_per_s']}
        print(f'end to end: vbp-fleet on {summary["frames"]} frames in {wall:.1f} s wall '
              f'(Ray start {summary["ray"]["start_s"]:.1f} s, then {summary["processing_s"]:.1f} '
              f's from starting the actors to the last bag = {summary["frames_per_s"]:.1f} '
              'frames/s)')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json_text(figures) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
