"""vbp-export: a model as ONNX with the VisualBackProp mask already in the graph, plus its card.

    vbp-export CHECKPOINT.safetensors OUT.onnx      # vbp_ros checkpoint or your own weights + card
    vbp-export WEIGHTS.pt OUT.onnx                  # your state dict from torch.save + card
    vbp-export NET.onnx OUT.onnx                    # add the mask to an ONNX file of your own

Neither OUT.onnx nor its card may be the model or the card read; existing ones are replaced
only with --force.

The output runs anywhere ONNX does (ONNX Runtime, TensorRT on the car): one inference gives the
network's outputs and ``vbp_mask``, (N, 1, H, W) float32 in [0, 1]. OUT.yaml, the model card
beside it, makes it a model that ``vbp_node`` takes as it is (``model:=OUT.onnx``). The tool
prints the mask plan (kept tensors, scale-ups, merges) and checks the graph: onnx.checker, one
run in ONNX Runtime, and, for PyTorch networks, the mask against PyTorch VisualBackProp.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from ..models.cards import card_path_for, parse_assignments, write_card
from ..models.checkpoint import ModelSpec
from ..explain.rules import UnsupportedModelError
from ..models.loading import load_model
from ..explain.onnx_vbp import MASK_OUTPUT, image_input, plan_visualbackprop
from ..explain.vbp import VisualBackProp
from ..engine.onnx_backend import (OPSET, OPSETS, OnnxRuntimeNetwork, export_onnx,
                                   with_visualbackprop)
from ..arguments import int_from
from ..interface import one_line


def exported_graph(model: torch.nn.Module | onnx.ModelProto, spec: ModelSpec,
                   opset: int = OPSET, source: str = 'model'
                   ) -> tuple[onnx.ModelProto, ModelSpec]:
    """The graph with the mask output, and the card that goes with it (for an ONNX file);
    errors name ``source``."""
    shape = (spec.input_channels, spec.input_height, spec.input_width)
    graph = (model if isinstance(model, onnx.ModelProto)
             else export_onnx(model, shape, opset, source))
    graph = with_visualbackprop(graph, spec, source)
    card = ModelSpec(**{**spec.__dict__, 'architecture': '', 'arguments': {},
                        'input_name': image_input(graph, spec.input_name),
                        'weights_entry': '', 'weights_prefix': ''})
    return graph, card


def compare_with_pytorch(model: torch.nn.Module, spec: ModelSpec, network: OnnxRuntimeNetwork
                         ) -> str:
    """How far the graph's mask and outputs are from PyTorch's on a random input."""
    torch.manual_seed(0)
    x = torch.rand(2, spec.input_channels, spec.input_height, spec.input_width) * 255.0 * \
        spec.pixel_scale
    outputs, masks = network(x.numpy())
    try:
        with VisualBackProp(model) as vbp, torch.inference_mode():
            expected_output, expected_mask = vbp(x)
    except UnsupportedModelError as error:
        return f'PyTorch VisualBackProp cannot read this network ({error}); not compared'
    mask_gap = float(np.abs(masks - expected_mask[:, 0].numpy()).max())
    output_gap = float(np.abs(outputs - expected_output.reshape(2, -1).numpy()).max())
    return (f'against PyTorch VisualBackProp on a random input: max |mask difference| '
            f'{mask_gap:.2e}, max |output difference| {output_gap:.2e}')


def writing_problem(model: str, card: str | None, out: Path, force: bool) -> str | None:
    """Why OUT and its card beside it must not be written, or None: not an .onnx name, a file
    that is an input of the export (the model, or the card it reads), or one that exists
    (unless ``force``)."""
    if out.suffix.lower() != '.onnx':
        return (f'{out}: the output must be an .onnx file (its card is written beside it, as '
                f'{card_path_for(out).name})')
    targets = (out, card_path_for(out))
    inputs = {Path(model).resolve(), Path(card or card_path_for(model)).resolve()}
    overwritten = [str(target) for target in targets if target.resolve() in inputs]
    if overwritten:
        return (f'{overwritten[0]} is an input of this export (the model or its card); '
                'choose another output name')
    existing = [str(target) for target in targets if target.exists()]
    if existing and not force:
        return f'{" and ".join(existing)} exists (--force replaces it)'
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point: writes OUT.onnx and OUT.yaml; exit code 0, or 1 with the reason."""
    parser = argparse.ArgumentParser(prog='vbp-export', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='.safetensors (vbp_ros checkpoint or own weights), a '
                        'torch.save state dict (.pt, .pth...) or .onnx')
    parser.add_argument('out', type=Path, help='the ONNX file to write (its card beside it)')
    parser.add_argument('--card', help='model card (default: the one beside the model)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='card value that wins over the card, e.g. output.index=1')
    parser.add_argument('--opset', type=int_from(*OPSETS), default=OPSET,
                        help=f'ONNX opset of a PyTorch network\'s export, {OPSETS[0]} to '
                        f'{OPSETS[1]} (%(default)s); an ONNX file keeps its own')
    parser.add_argument('--force', action='store_true',
                        help='replace an existing output and its card')
    args = parser.parse_args(argv)
    problem = writing_problem(args.model, args.card, args.out, args.force)
    if problem:
        print(f'vbp-export: {problem}', file=sys.stderr)
        return 1
    try:
        model, spec = load_model(args.model, args.card, parse_assignments(args.set))
        graph, card = exported_graph(model, spec, args.opset, args.model)
        network = OnnxRuntimeNetwork(graph, card, device='cpu', source=args.model)
        shape = (1, card.input_channels, card.input_height, card.input_width)
        outputs, masks = network(np.zeros(shape, np.float32))
        plan = plan_visualbackprop(graph, card.input_name, input_layout=card.input_layout)
    except (ValueError, RuntimeError) as error:  # the project's errors are ValueErrors
        print(f'vbp-export: {one_line(error)}', file=sys.stderr)
        return 1
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(graph, str(args.out))
        card_file = write_card(card_path_for(args.out), card)
    except OSError as error:
        print(f'vbp-export: cannot write {args.out}: {error.strerror or error}', file=sys.stderr)
        return 1
    print(plan.describe())
    print(f'checked: onnx.checker, one run in ONNX Runtime ({outputs.shape[1]} outputs, '
          f"'{MASK_OUTPUT}' {masks.shape[1]}x{masks.shape[2]})")
    if isinstance(model, torch.nn.Module):
        print(compare_with_pytorch(model, spec, network))
    print(f'wrote {args.out} and its card {card_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
