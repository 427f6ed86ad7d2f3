"""vbp-import-t7: convert the paper authors' Torch7 model into a vbp_ros safetensors checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors import SafetensorError

from ..models.checkpoint import CheckpointError, save_checkpoint
from ..models.torch7 import AUTHORS_SPEC, load_torch7_model


def main(argv: list[str] | None = None) -> int:
    """Entry point: writes the checkpoint; exit code 1 when the file cannot be imported."""
    parser = argparse.ArgumentParser(prog='vbp-import-t7', description=__doc__)
    parser.add_argument('model', help='the Torch7 file (model.t7b)')
    parser.add_argument('output', help='the safetensors checkpoint to write')
    args = parser.parse_args(argv)
    try:
        model = load_torch7_model(args.model)
    except CheckpointError as error:
        print(f'vbp-import-t7: {error}', file=sys.stderr)
        return 1
    output = Path(args.output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(output, model, AUTHORS_SPEC)
    except (OSError, SafetensorError) as error:
        print(f'vbp-import-t7: cannot write {output}: {error}', file=sys.stderr)
        return 1
    print(f'wrote {args.output} ({sum(p.numel() for p in model.parameters())} parameters)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
