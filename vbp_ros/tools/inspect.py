"""vbp-inspect: what VisualBackProp does with a network, before trusting its masks.

Prints the plan read from the network's graph: every kept tensor with its name, activation and
size, every scale-up step with its geometry and output padding, where branches merge, what was
treated as the head; then the measured cost of each method of the explainer table against the
forward pass (interleaved, paired medians). With ``--image PATH --out DIR`` it also renders the
paper's Figure 2 for that image: every kept tensor's averaged map and intermediate mask.

MODEL is a vbp_ros checkpoint (.safetensors), a registered architecture name (``resnet18``,
``pilotnet_elu``, ...) or ``module:factory`` for a network in Python: the module is imported
and ``factory()`` called, which runs that code. ``--input CxHxW`` gives the input size where the
model does not (checkpoints and the registered networks do). A network VisualBackProp cannot
read is refused with the node and the reason (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..core.checkpoint import CheckpointError
from ..core.loading import load_checkpoint
from ..core.explainers import EXPLAINERS, explainer
from ..core.networks import ARCHITECTURES, build_network
from ..core.rules import UnsupportedModelError
from ..core.vbp import VisualBackProp
from ..data.sources import read_image
from ..engine.preprocess import Preprocessor
from ..engine.timing import paired_extra_ms, time_methods
from ..pixels.frames import FrameError
from ..render.figure2 import render_figure2


def load_model(source: str) -> tuple[nn.Module, tuple[int, int, int] | None, object]:
    """The network in eval mode, its input size (C, H, W) where known, and the checkpoint's
    spec (None for other sources)."""
    if source.endswith('.safetensors') or Path(source).is_file():
        model, spec = load_checkpoint(source)
        return model, (spec.input_channels, spec.input_height, spec.input_width), spec
    if source in ARCHITECTURES:
        model = build_network(source)
    elif ':' in source:
        module_name, factory = source.split(':', 1)
        model = getattr(importlib.import_module(module_name), factory)()
        if not isinstance(model, nn.Module):
            raise TypeError(f'{source}() returned {type(model).__name__}, not an nn.Module')
    else:
        raise ValueError(f'{source!r} is not a checkpoint file, a registered architecture '
                         f'({", ".join(ARCHITECTURES)}) or module:factory')
    size = getattr(model, 'input_size', None)
    channels = getattr(model, 'in_channels', None)
    return model.eval(), (channels, *size) if size and channels else None, None


def parse_size(text: str) -> tuple[int, int, int]:
    """'3x66x200' -> (3, 66, 200)."""
    try:
        channels, height, width = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected CxHxW, e.g. 3x66x200, not {text!r}') from None
    if min(channels, height, width) < 1:
        raise argparse.ArgumentTypeError(f'sizes must be positive: {text!r}')
    return channels, height, width


def method_costs(model: nn.Module, x: torch.Tensor, repeats: int) -> list[str]:
    """One line per method: its time on top of the forward pass (paired, interleaved)."""
    runners = {'forward': model}
    lines = []
    for name in EXPLAINERS:
        try:
            method = explainer(name, model)
            with torch.inference_mode():
                method(x)
            runners[name] = method
        except UnsupportedModelError as error:
            lines.append(f'  {name}: refused: {error}')
    with torch.inference_mode():
        times = time_methods({name: partial(run, x) for name, run in runners.items()},
                             repeats, warmup=2)
    forward = times.pop('forward')
    result = [f'  forward pass: {np.median(forward):.2f} ms (median of {len(forward)})']
    for name, values in times.items():
        extra = paired_extra_ms(values, forward)
        result.append(f'  {name}: adds {extra:.2f} ms ({100 * extra / np.median(forward):+.1f}%)')
    for method in runners.values():
        getattr(method, 'remove', lambda: None)()
    return result + lines


def network_input(path: Path, size: tuple[int, int, int], spec: object) -> np.ndarray:
    """The (C, H, W) float32 input for an image: the checkpoint's preprocessing, else the
    image resized to the input size, gray or RGB by the channel count, scaled to [0, 1]."""
    image = read_image(path)
    if spec is not None:
        return Preprocessor(spec)(image)
    channels, height, width = size
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if channels == 1:
        image = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return image[None].astype(np.float32) / 255.0
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
    return image.transpose(2, 0, 1).astype(np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
    """Print the plan of MODEL; exit 2 when VisualBackProp refuses the network."""
    parser = argparse.ArgumentParser(prog='vbp-inspect', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='checkpoint, architecture name or module:factory')
    parser.add_argument('--input', type=parse_size, help='input size CxHxW where the model '
                        'does not say')
    parser.add_argument('--image', type=Path, help='render Figure 2 for this image')
    parser.add_argument('--out', type=Path, default=Path('runs/inspect'),
                        help='folder for the Figure 2 rendering (%(default)s)')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls per method')
    args = parser.parse_args(argv)
    try:
        model, size, spec = load_model(args.model)
    except (CheckpointError, ValueError, TypeError, ImportError, AttributeError) as error:
        print(f'vbp-inspect: {error}', file=sys.stderr)
        return 1
    size = args.input or size
    if size is None:
        parser.error('the model does not say its input size: give --input CxHxW')
    torch.manual_seed(0)
    x = torch.rand(1, *size)
    if args.image is not None:
        try:
            x = torch.from_numpy(network_input(args.image, size, spec))[None]
        except FrameError as error:
            print(f'vbp-inspect: {args.image}: {error}', file=sys.stderr)
            return 1
    try:
        with VisualBackProp(model) as vbp, torch.inference_mode():
            explanation = vbp.explain(x)
            print(f'{args.model}: VisualBackProp plan')
            print(vbp.describe())
    except UnsupportedModelError as error:
        print(f'vbp-inspect: {args.model}: refused: {error}', file=sys.stderr)
        return 2
    print('cost against the forward pass (batch 1, this machine):')
    print('\n'.join(method_costs(model, x, args.repeats)))
    if args.image is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / f'{args.image.stem}_figure2.png'
        figure = render_figure2(x[0].numpy(), *explanation.pictures())
        cv2.imwrite(str(target), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
        print(f'Figure 2 for {args.image.name}: {target}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
