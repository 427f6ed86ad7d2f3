"""vbp-inspect: what VisualBackProp does with a network, before trusting its masks.

Prints the plan read from the network's graph: every kept tensor with its name, activation and
size, every scale-up step with its geometry and output padding, where branches merge, what was
treated as the head; then the measured cost of each method against the forward pass
(interleaved, paired medians). With ``--image PATH --out DIR`` it also renders the paper's
Figure 2 for that image: every kept tensor's averaged map and intermediate mask.

MODEL is a model file with its card, as vbp_node takes it (a vbp_ros checkpoint, your weights
with their card, an ONNX file with its card; ``--card`` and ``--set`` as in vbp-export), a
registered architecture name (``resnet18``, ``pilotnet_elu``, ...) or ``module:factory`` for a
network in Python: the module is imported and ``factory()`` called, which runs that code.
``--input CxHxW`` gives the input size where the network does not (registered networks do).
The image becomes the network input as the card says (crop, resize by its interpolation,
colour, scaling); a network without a card takes it whole, gray or RGB by its channels, scaled
to [0, 1].

For an ONNX file the plan is that of the mask appended to the graph (the one vbp_node runs),
the cost is the graph with the mask against the graph alone in ONNX Runtime, and Figure 2 is
drawn from the graph's own outputs. A network VisualBackProp cannot read is refused with the
node and the reason (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from ..models.cards import apply_overrides, parse_assignments, read_card, spec_from_card
from ..models.checkpoint import CheckpointError, ModelSpec, default_color
from ..explain.explainers import EXPLAINERS, explainer
from ..models.loading import MODEL_FORMATS, Model, load_model
from ..models.networks import ARCHITECTURES, build_network
from ..explain.onnx_vbp import has_visualbackprop, plan_visualbackprop
from ..explain.rules import UnsupportedModelError
from ..explain.vbp import VisualBackProp
from ..data.sources import read_image
from ..engine.onnx_backend import OnnxRuntimeNetwork
from ..models.preprocess import Preprocessor
from ..engine.timing import paired_extra_ms, time_methods
from ..arguments import positive_int
from ..interface import one_line
from ..pixels.frames import FrameError
from ..render.figure2 import render_figure2

Pictures = tuple[np.ndarray, list[tuple[str, np.ndarray, np.ndarray]]]  # mask, layers


def load_network(source: str, card: str | None, overrides: Mapping,
                 size: tuple[int, int, int] | None) -> tuple[Model, ModelSpec | None]:
    """The network and its card: a model file through the package's loader; a registered
    architecture or ``module:factory`` with a card for its input size (``size``, else the
    network's own; None when neither says), ``card`` and ``overrides`` applied."""
    if Path(source).suffix.lower() in MODEL_FORMATS or Path(source).is_file():
        return load_model(source, card, overrides)
    if source in ARCHITECTURES:
        model = build_network(source)
    elif ':' in source:
        module_name, factory = source.split(':', 1)
        model = getattr(importlib.import_module(module_name), factory)()
        if not isinstance(model, nn.Module):
            raise TypeError(f'{source}() returned {type(model).__name__}, not an nn.Module')
    else:
        raise ValueError(f'{source!r} is not a model file, a registered architecture '
                         f'({", ".join(ARCHITECTURES)}) or module:factory')
    own_size = getattr(model, 'input_size', None)
    channels = getattr(model, 'in_channels', None)
    size = size or ((channels, *own_size) if own_size and channels else None)
    if size is None:
        return model.eval(), None
    spec = ModelSpec(source, *size, color=default_color(size[0]))
    if card:
        spec = spec_from_card(read_card(card), spec, card)
    return model.eval(), apply_overrides(spec, overrides)


def parse_size(text: str) -> tuple[int, int, int]:
    """'3x66x200' -> (3, 66, 200)."""
    try:
        channels, height, width = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected CxHxW, e.g. 3x66x200, not {text!r}') from None
    if min(channels, height, width) < 1:
        raise argparse.ArgumentTypeError(f'sizes must be positive: {text!r}')
    return channels, height, width


def cost_lines(runners: dict[str, Callable[[], object]], repeats: int) -> list[str]:
    """One line per runner but 'forward': its time on top of 'forward' (paired, interleaved)."""
    times = time_methods(runners, repeats, warmup=2)
    forward = times.pop('forward')
    lines = [f'  forward pass: {np.median(forward):.2f} ms (median of {len(forward)})']
    for name, values in times.items():
        extra = paired_extra_ms(values, forward)
        lines.append(f'  {name}: adds {extra:.2f} ms ({100 * extra / np.median(forward):+.1f}%)')
    return lines


def method_costs(model: nn.Module, x: torch.Tensor, repeats: int) -> list[str]:
    """One line per method of the explainer table: its time on top of the forward pass."""
    runners = {'forward': partial(model, x)}
    refused = []
    for name in EXPLAINERS:
        try:
            method = explainer(name, model)
            with torch.inference_mode():
                method(x)
            runners[name] = partial(method, x)
        except UnsupportedModelError as error:
            refused.append(f'  {name}: refused: {error}')
    with torch.inference_mode():
        lines = cost_lines(runners, repeats)
    for runner in runners.values():
        getattr(runner.func, 'remove', lambda: None)()
    return lines + refused


def explain_network(model: nn.Module, spec: ModelSpec, x: torch.Tensor, repeats: int
                    ) -> tuple[str, list[str], Pictures]:
    """The plan, the costs and the Figure 2 pictures of a PyTorch network."""
    with VisualBackProp(model) as vbp, torch.inference_mode():
        explanation = vbp.explain(x)
        plan = vbp.describe()
    return plan, method_costs(model, x, repeats), explanation.pictures()


def explain_graph(graph: onnx.ModelProto, spec: ModelSpec, x: torch.Tensor, repeats: int,
                  source: str = 'model') -> tuple[str, list[str], Pictures]:
    """The plan, the costs and the Figure 2 pictures of an ONNX graph with its in-graph mask;
    errors name ``source``."""
    plan = plan_visualbackprop(graph, spec.input_name, (spec.input_height, spec.input_width),
                               spec.input_layout)
    network = OnnxRuntimeNetwork(graph, spec, device='cpu', layer_outputs=True, source=source)
    _, masks, layers = network.explain(x.numpy())
    pictures = (masks[0], [(name, averaged[0], mask[0]) for name, averaged, mask in layers])
    return plan.describe(), graph_costs(graph, spec, x, repeats, source), pictures


def graph_costs(graph: onnx.ModelProto, spec: ModelSpec, x: torch.Tensor, repeats: int,
                source: str = 'model') -> list[str]:
    """The in-graph mask's time on top of the graph alone, in ONNX Runtime on the CPU."""
    if has_visualbackprop(graph):
        return ['  not measured: the graph carries its mask already (vbp-export) and ONNX '
                'Runtime runs all of it; inspect the model it was exported from']
    inputs = x.numpy()
    forward = OnnxRuntimeNetwork(graph, spec, device='cpu', with_mask=False, source=source)
    masked = OnnxRuntimeNetwork(graph, spec, device='cpu', source=source)
    return cost_lines({'forward': partial(forward, inputs), 'vbp': partial(masked, inputs)},
                      repeats)


def main(argv: list[str] | None = None) -> int:
    """Print the plan of MODEL; exit 2 when VisualBackProp refuses the network."""
    parser = argparse.ArgumentParser(prog='vbp-inspect', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='model file (.safetensors, .onnx), architecture name or '
                        'module:factory')
    parser.add_argument('--card', help='model card (default: the one beside the model)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='card value that wins over the card, e.g. input.interpolation=cubic')
    parser.add_argument('--input', type=parse_size, help='input size CxHxW where the network '
                        'does not say')
    parser.add_argument('--image', type=Path, help='render Figure 2 for this image')
    parser.add_argument('--out', type=Path, default=Path('runs/inspect'),
                        help='folder for the Figure 2 rendering (%(default)s)')
    parser.add_argument('--repeats', type=positive_int, default=20,
                        help='timed calls per method')
    args = parser.parse_args(argv)
    try:
        model, spec = load_network(args.model, args.card, parse_assignments(args.set),
                                   args.input)
    except (CheckpointError, ValueError, TypeError, ImportError, AttributeError) as error:
        print(f'vbp-inspect: {error}', file=sys.stderr)
        return 1
    if spec is None:
        parser.error('the model does not say its input size: give --input CxHxW')
    torch.manual_seed(0)
    x = torch.rand(1, spec.input_channels, spec.input_height, spec.input_width)
    if args.image is not None:
        try:
            x = torch.from_numpy(Preprocessor(spec)(read_image(args.image)))[None]
        except FrameError as error:
            print(f'vbp-inspect: {args.image}: {error}', file=sys.stderr)
            return 1
    explain = (partial(explain_graph, source=args.model) if isinstance(model, onnx.ModelProto)
               else explain_network)
    try:
        plan, costs, pictures = explain(model, spec, x, args.repeats)
    except UnsupportedModelError as error:
        print(f'vbp-inspect: {_named(error, args.model, "refused: ")}', file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as error:  # e.g. --input the network cannot take
        print(f'vbp-inspect: {_named(error, args.model)}', file=sys.stderr)
        return 1
    print(f'{args.model}: VisualBackProp plan')
    print(plan)
    print('cost against the forward pass (batch 1, this machine):')
    print('\n'.join(costs))
    if args.image is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / f'{args.image.stem}_figure2.png'
        figure = render_figure2(x[0].numpy(), *pictures)
        cv2.imwrite(str(target), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
        print(f'Figure 2 for {args.image.name}: {target}')
    return 0


def _named(error: BaseException, model: str, kind: str = '') -> str:
    """The error on one line, naming the model once."""
    text = one_line(error)
    return text if text.startswith(f'{model}: ') else f'{model}: {kind}{text}'


if __name__ == '__main__':
    sys.exit(main())
