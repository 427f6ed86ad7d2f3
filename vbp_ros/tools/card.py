"""vbp-card: write the model card (YAML) of a model, beside it or where --out says.

    vbp-card runs/models/authors.safetensors          # a vbp_ros checkpoint's own spec as a card
    vbp-card net.onnx --set input.color=rgb --set input.scale=0.00392156862745098
    vbp-card weights.safetensors --set architecture=my_pkg.nets:build --set input.height=66 \
        --set input.width=200 --set input.color=yuv

For an ONNX file without a card it writes a template from the graph's input (channels, height,
width, and channels-last layout where the graph transposes its input to NCHW): check the colour,
scaling and output keys before use. The card is checked against the model before it is
written; its errors name the model file. An existing card is kept unless --force. Where the
VisualBackProp mask cannot be read from an ONNX graph, a warning says why (vbp_node would
refuse the model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from ..engine.onnx_backend import with_visualbackprop
from ..explain.rules import UnsupportedModelError
from ..models.cards import card_path_for, card_text, parse_assignments, write_card
from ..models.checkpoint import CARD_KEYS, CheckpointError, ModelSpec, default_color
from ..models.loading import (ONNX_SUFFIX, MissingCardError, Model, load_model, load_onnx,
                              onnx_input_fields)


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit code 0, or 1 with the reason."""
    parser = argparse.ArgumentParser(prog='vbp-card', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='.safetensors or .onnx')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='a card value (YAML), e.g. output.unit=deg; repeatable')
    parser.add_argument('--out', type=Path, help='where to write (default: beside the model)')
    parser.add_argument('--force', action='store_true', help='replace an existing card')
    args = parser.parse_args(argv)
    out = args.out or card_path_for(args.model)
    if out.exists() and not args.force:
        print(f'vbp-card: {out} exists (--force replaces it)', file=sys.stderr)
        return 1
    try:
        values = parse_assignments(args.set)
        network, spec = _model_for(args.model, values)
    except (CheckpointError, ValueError) as error:
        print(f'vbp-card: {error}', file=sys.stderr)
        return 1
    write_card(out, spec)
    print(card_text(spec), end='')
    print(f'wrote {out}')
    if isinstance(network, onnx.ModelProto):
        try:
            with_visualbackprop(network, spec, str(args.model))
        except UnsupportedModelError as error:
            print(f'vbp-card: warning: vbp_node will refuse this model: {error}',
                  file=sys.stderr)
    return 0


def _model_for(model: Path, values: dict) -> tuple[Model, ModelSpec]:
    """The network and its spec with ``values`` applied; for a model without a card yet, a
    template (the graph's input, for ONNX) completed by ``values``, checked by loading it."""
    try:
        return load_model(model, overrides=values)
    except MissingCardError:
        pass
    graph = onnx_input_fields(load_onnx(model)) if model.suffix.lower() == ONNX_SUFFIX else {}
    if 'input_channels' in graph and CARD_KEYS['color'] not in values:
        values = {**values, CARD_KEYS['color']: default_color(graph['input_channels'])}
    return load_model(model, values)


if __name__ == '__main__':
    sys.exit(main())
