"""vbp-agreement: how similar VisualBackProp and LRP-epsilon masks are on a set of images.

LRP relevance carries the sign of the output (a left-steering output gives mostly negative
relevance), so the masks are compared with its magnitude |R|. Per image: Pearson correlation of
the VBP mask with |R| and with the signed R, and the share of the top 5% VBP pixels that are also
among the top 5% |R| pixels. As a
baseline the same figures are computed for mismatched pairs (each VBP mask against the next
image's LRP map). Images whose LRP relevance is identically zero (the output is the head's bias
alone: every unit of a hidden fully connected layer is inactive) have no LRP mask and are
listed but left out of the summary.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..arguments import positive_float
from ..models.checkpoint import CheckpointError
from ..models.loading import load_checkpoint
from ..explain.lrp import LRPEpsilon
from ..explain.metrics import pearson, top_fraction_overlap
from ..explain.vbp import VisualBackProp
from ..data.sources import image_paths, read_image
from ..models.preprocess import Preprocessor
from ..pixels.frames import FrameError


@dataclass(frozen=True)
class Agreement:
    """Per-image figures (NaN where LRP is degenerate) and the mismatched-pair baseline."""

    names: list[str]
    pearson: np.ndarray
    pearson_signed: np.ndarray
    top5_overlap: np.ndarray
    baseline_top5_overlap: float
    degenerate: np.ndarray

    def summary(self) -> str:
        valid = ~self.degenerate
        return (f'{valid.sum()} of {len(self.names)} images with an LRP mask: '
                f'Pearson with |R| median {np.median(self.pearson[valid]):+.2f} '
                f'(signed R {np.median(self.pearson_signed[valid]):+.2f}), '
                f'top-5% overlap median {np.median(self.top5_overlap[valid]):.2f} '
                f'(mismatched pairs {self.baseline_top5_overlap:.2f})')


def measure_agreement(model: torch.nn.Module, inputs: torch.Tensor, names: list[str],
                      epsilon: float = 100.0) -> Agreement:
    """VBP and LRP-epsilon masks of a batch of network inputs, compared image by image."""
    with torch.inference_mode():
        with VisualBackProp(model) as vbp:
            _, vbp_masks = vbp(inputs)
        _, relevance = LRPEpsilon(model, epsilon)(inputs, normalize=True)
    magnitude = relevance.abs()
    degenerate = (magnitude.flatten(1) == 0).all(dim=1).numpy()
    valid = torch.from_numpy(~degenerate)
    baseline = (top_fraction_overlap(vbp_masks[valid], magnitude[valid].roll(1, 0)).mean().item()
                if valid.sum() > 1 else float('nan'))
    return Agreement(names, pearson(vbp_masks, magnitude).numpy(),
                     pearson(vbp_masks, relevance).numpy(),
                     top_fraction_overlap(vbp_masks, magnitude).numpy(), baseline, degenerate)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the figures per image; exit code 1 on a bad model or image."""
    parser = argparse.ArgumentParser(prog='vbp-agreement', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--model', required=True, help='vbp_ros safetensors checkpoint')
    parser.add_argument('--epsilon', type=positive_float, default=100.0,
                        help='LRP epsilon (%(default)s)')
    args = parser.parse_args(argv)
    try:
        model, spec = load_checkpoint(args.model)
        preprocess = Preprocessor(spec)
        paths = image_paths(args.images)
        if not paths:
            raise FrameError(f'no images in {" ".join(args.images)}')
        inputs = torch.from_numpy(np.stack([preprocess(read_image(p)) for p in paths]))
    except (CheckpointError, FrameError) as error:
        print(f'vbp-agreement: {error}', file=sys.stderr)
        return 1
    result = measure_agreement(model, inputs, [p.name for p in paths], args.epsilon)
    print(f'{"image":<14}{"pearson |R|":>12}{"pearson R":>11}{"top5%":>7}')
    for index, name in enumerate(result.names):
        if result.degenerate[index]:
            print(f'{name:<14}  LRP relevance is zero (output = head bias)')
        else:
            print(f'{name:<14}{result.pearson[index]:>+12.2f}'
                  f'{result.pearson_signed[index]:>+11.2f}{result.top5_overlap[index]:>7.2f}')
    print(result.summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())
