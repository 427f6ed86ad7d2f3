"""vbp-eval: how well a steering network drives and how well VisualBackProp, LRP-epsilon and
Grad-CAM explain it, on held-out synthetic road frames with ground truth.

Per method of :data:`vbp_ros.explain.explainers.EXPLAINERS` (masks at network resolution: the
magnitude of each method's map, so LRP's signed relevance counts by its size):
``lane_mass_ratio`` (mask mass on the ego-lane markings over their area share), ``pointing_game``
(the mask maximum within 2 pixels of a marking), ``aopc`` (deletion: mean absolute output change
as the most salient pixels are replaced by the image mean, 20 steps) and ``insertion_aopc``,
``shift_salient_change_rad`` and ``shift_background_change_rad`` (NVIDIA shift test, top 10% of
the mask moved by ``--shift`` pixels: by default 20 per 640 pixels of network width, the same
share of the view on every network), and ``distractor_mass_ratio`` (mask mass on stop lines
and crosswalks over their area share, on the frames that have them; below 1 means they are
ignored). Also the network's ``rmse_rad`` against the ground-truth angles and their
``angle_std_rad``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..models.checkpoint import CheckpointError
from ..models.loading import load_checkpoint
from ..explain.explainers import EXPLAINERS, explainer
from ..explain.explanation_metrics import (deletion_insertion, lane_mass_ratio, mass_ratio,
                                           pointing_game, shift_test)
from ..explain.rules import UnsupportedModelError
from ..data.datasets import SteeringSet, synthetic_set
from ..arguments import positive_int
from ..interface import json_text

METHODS = tuple(EXPLAINERS)
BATCH = 32


def masks_for(method: str, model: nn.Module, inputs: Tensor) -> Tensor:
    """(B, 1, H, W) masks of one method for network inputs: the magnitude of its map."""
    with explainer(method, model) as explain, torch.inference_mode():
        return _batched(lambda x: explain(x)[1].abs(), inputs)


def _batched(compute: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    return torch.cat([compute(inputs[i:i + BATCH]) for i in range(0, len(inputs), BATCH)])


def nan_mean(values: Tensor) -> float:
    """The mean of the finite values (NaN when there are none)."""
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if len(finite) else math.nan


def default_shift(width: int) -> int:
    """20 pixels on a 640-pixel-wide input, the same share of the width on others."""
    return max(1, round(20 * width / 640))


def method_metrics(model: nn.Module, inputs: Tensor, data: SteeringSet, masks: Tensor,
                   shift: int) -> dict:
    """Every explanation figure of one method's masks on a synthetic set."""
    lanes = torch.from_numpy(data.lanes)
    distractors = torch.from_numpy(data.distractors)
    curves = deletion_insertion(model, inputs, masks, steps=20, batch_size=64)
    shifted = shift_test(model, inputs, masks, shift=shift, fraction=0.1, batch_size=64)
    has_distractor = distractors.flatten(1).any(dim=1)
    return {
        'lane_mass_ratio': nan_mean(lane_mass_ratio(masks, lanes)),
        'pointing_game': nan_mean(pointing_game(masks, lanes, tolerance=2)),
        'aopc': nan_mean(curves.deletion_aopc),
        'insertion_aopc': nan_mean(curves.insertion_aopc),
        'shift_salient_change_rad': nan_mean(shifted.salient_shift_change),
        'shift_background_change_rad': nan_mean(shifted.background_shift_change),
        'distractor_mass_ratio': nan_mean(mass_ratio(masks[has_distractor],
                                                     distractors[has_distractor])),
        'frames_with_distractors': int(has_distractor.sum()),
    }


def evaluate(model: nn.Module, spec, seed: int, frames: int,
             methods: tuple[str, ...] = METHODS, shift: int | None = None) -> dict:
    """All figures for ``frames`` synthetic frames of ``seed``."""
    shift = default_shift(spec.input_width) if shift is None else shift
    data = synthetic_set(seed, 0, frames, spec, regions=True)
    inputs = data.inputs(slice(None), spec)
    with torch.inference_mode():
        predicted = _batched(model, inputs)
    errors = predicted.squeeze(1).double() - torch.from_numpy(data.angles).double()
    report = {'rmse_rad': float(errors.square().mean().sqrt()),
              'angle_std_rad': float(data.angles.std()), 'frames': frames, 'seed': seed,
              'shift_px': shift}
    for method in methods:
        try:
            masks = masks_for(method, model, inputs)
        except UnsupportedModelError as error:  # LRP-epsilon follows chains only
            report[method] = {'refused': str(error)}
            continue
        report[method] = method_metrics(model, inputs, data, masks, shift)
    return report


def format_report(report: dict, methods: tuple[str, ...]) -> str:
    """The report as a text table, one column per method."""
    lines = [f'{report["frames"]} held-out synthetic frames (seed {report["seed"]}): RMSE '
             f'{report["rmse_rad"]:.5f} rad = {report["rmse_rad"] / report["angle_std_rad"]:.1%}'
             f' of the angle std {report["angle_std_rad"]:.5f} rad; shift test '
             f'{report["shift_px"]} px']
    shown = [m for m in methods if 'refused' not in report[m]]
    keys = list(report[shown[0]]) if shown else []
    lines.append(f'{"":<30}' + ''.join(f'{m:>12}' for m in shown))
    for key in keys:
        lines.append(f'{key:<30}' + ''.join(f'{report[m][key]:>12.4g}' for m in shown))
    lines += [f'{m}: refused: {report[m]["refused"]}' for m in methods if m not in shown]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the report (and writes --json); exit code 1 on a bad model."""
    parser = argparse.ArgumentParser(prog='vbp-eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', help='checkpoint (default: the bundled default model)')
    parser.add_argument('--seed', type=int, default=1000, help='synthetic seed (%(default)s)')
    parser.add_argument('--frames', type=positive_int, default=200,
                        help='held-out frames (%(default)s)')
    parser.add_argument('--methods', default=','.join(METHODS), help='%(default)s')
    parser.add_argument('--shift', type=int, help='shift test pixels (default: 20 per 640 '
                        'pixels of network width)')
    parser.add_argument('--json', metavar='PATH', help='also write the figures as JSON')
    args = parser.parse_args(argv)
    methods = tuple(args.methods.split(','))
    if set(methods) - set(METHODS):
        parser.error(f'methods must be among {", ".join(METHODS)}')
    try:
        model, spec = load_checkpoint(args.model)
    except CheckpointError as error:
        print(f'vbp-eval: {error}', file=sys.stderr)
        return 1
    report = evaluate(model, spec, args.seed, args.frames, methods, args.shift)
    print(format_report(report, methods))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json_text(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
