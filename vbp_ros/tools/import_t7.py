"""vbp-import-t7: convert the paper authors' Torch7 model into a vbp_ros safetensors checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..core.checkpoint import CheckpointError, save_checkpoint
from ..core.torch7 import AUTHORS_SPEC, load_torch7_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='vbp-import-t7', description=__doc__)
    parser.add_argument('model', help='the Torch7 file (model.t7b)')
    parser.add_argument('output', help='the safetensors checkpoint to write')
    args = parser.parse_args(argv)
    try:
        model = load_torch7_model(args.model)
    except CheckpointError as error:
        print(f'vbp-import-t7: {error}', file=sys.stderr)
        return 1
    save_checkpoint(args.output, model, AUTHORS_SPEC)
    print(f'wrote {args.output} ({sum(p.numel() for p in model.parameters())} parameters)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
