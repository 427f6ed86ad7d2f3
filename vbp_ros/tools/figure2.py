"""vbp-figure2: render the paper's Figure 2 for images: every layer's averaged feature map and
intermediate mask, the final mask and the red overlay, one PNG per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import torch

from ..models.checkpoint import CheckpointError
from ..models.loading import load_checkpoint
from ..explain.vbp import VisualBackProp
from ..data.sources import image_paths, read_image
from ..models.preprocess import Preprocessor
from ..pixels.frames import FrameError
from ..render.figure2 import render_figure2


def main(argv: list[str] | None = None) -> int:
    """Entry point: one PNG per image; exit code 1 when a model or image was unusable."""
    parser = argparse.ArgumentParser(prog='vbp-figure2', description=__doc__)
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--model', required=True, help='vbp_ros safetensors checkpoint')
    parser.add_argument('--out', default='runs/figure2', help='output folder (%(default)s)')
    args = parser.parse_args(argv)
    paths = image_paths(args.images)
    if not paths:
        print(f'vbp-figure2: no images in {" ".join(args.images)}', file=sys.stderr)
        return 1
    try:
        model, spec = load_checkpoint(args.model)
    except CheckpointError as error:
        print(f'vbp-figure2: {error}', file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    preprocess = Preprocessor(spec)
    with VisualBackProp(model) as vbp, torch.inference_mode():
        for path in paths:
            try:
                network_input = preprocess(read_image(path))
            except FrameError as error:
                print(f'vbp-figure2: skipped {error}', file=sys.stderr)
                failures += 1
                continue
            explanation = vbp.explain(torch.from_numpy(network_input)[None])
            figure = render_figure2(network_input, *explanation.pictures())
            target = out / f'{path.stem}_figure2.png'
            cv2.imwrite(str(target), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
            angle = float(explanation.output.flatten()[0])
            print(f'{path.name}: output {angle:+.4f} {spec.output_unit} -> {target}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
