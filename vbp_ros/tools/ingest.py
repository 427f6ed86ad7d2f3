"""vbp-ingest: turn Udacity-layout bags (ROS 1 .bag files or ROS 2 bag folders) into one .npz
training set of cropped, scaled gray centre-camera frames labelled with the steering wheel angle
(radians) of the nearest /vehicle/steering_report."""

from __future__ import annotations

import argparse
import sys

from ..data.udacity import (DEFAULT_CROP, DEFAULT_SIZE, IngestError, ingest_bags,
                            write_training_set)
from ..pixels.frames import Crop


def parse_crop(text: str) -> Crop:
    """'TOP,LEFT,HEIGHT,WIDTH' in pixels of the full camera frame."""
    try:
        values = [int(part) for part in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f'expected TOP,LEFT,HEIGHT,WIDTH, not {text!r}')
    return Crop(*values)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' of the network input, both positive."""
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, not {text!r}') from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f'size must be positive, not {text!r}')
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog='vbp-ingest', description=__doc__)
    parser.add_argument('bags', nargs='+', metavar='BAG', help='ROS 1 .bag file or ROS 2 folder')
    parser.add_argument('--out', required=True, help='training set to write (.npz)')
    parser.add_argument('--crop', type=parse_crop, default=DEFAULT_CROP,
                        help='TOP,LEFT,HEIGHT,WIDTH of the camera frame (default: %s)'
                        % ','.join(map(str, DEFAULT_CROP.as_tuple())))
    parser.add_argument('--size', type=parse_size, default=DEFAULT_SIZE,
                        help='network input WIDTHxHEIGHT (default: %dx%d)' % DEFAULT_SIZE)
    parser.add_argument('--min-speed', type=float, default=5.0,
                        help='keep frames faster than this, m/s (default: %(default)s)')
    parser.add_argument('--max-gap', type=float, default=0.1,
                        help='largest image-to-report time gap, s (default: %(default)s)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Ingest the bags, print the counts, write the training set; 1 on error."""
    args = build_parser().parse_args(argv)
    try:
        result = ingest_bags(args.bags, crop=args.crop, size=args.size,
                             min_speed=args.min_speed, max_gap_s=args.max_gap)
    except IngestError as error:
        print(f'vbp-ingest: error: {error}', file=sys.stderr)
        return 1
    counts = result.meta['counts']
    kept = counts['kept']
    print(', '.join(f'{name} {value}' for name, value in counts.items()))
    if not kept:
        print('vbp-ingest: error: no frames kept; nothing written', file=sys.stderr)
        return 1
    target = write_training_set(result, args.out)
    print(f'{kept} frames {args.size[0]}x{args.size[1]} -> {target}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
