"""vbp-figure2: render the paper's Figure 2 for images: every layer's averaged feature map and
intermediate mask, the final mask and the red overlay, one PNG per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.checkpoint import CheckpointError
from ..core.loading import load_checkpoint
from ..pixels.overlay import red_overlay
from ..core.vbp import VBPExplanation, VisualBackProp
from ..engine.preprocess import Preprocessor
from ..pixels.frames import FrameError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.pgm', '.ppm')
LABEL_HEIGHT = 18


def render_figure2(network_input: np.ndarray, explanation: VBPExplanation, index: int = 0
                   ) -> np.ndarray:
    """An RGB image: input and overlay, then per layer the averaged map beside the intermediate
    mask (each scaled to the input size, nearest neighbour, normalized for display), then the
    final mask. ``network_input`` is the (C, H, W) input; ``index`` picks the batch image."""
    gray = network_input.mean(axis=0)
    gray = _unit(gray)
    mask = explanation.mask[index, 0].float().cpu().numpy()
    size = (gray.shape[1], gray.shape[0])
    rows = [(_tile(gray, 'network input', size),
             _label(red_overlay(gray, mask), 'VisualBackProp overlay'))]
    pairs = zip(explanation.layer_names, explanation.averaged_maps,
                explanation.intermediate_masks)
    for depth, (name, averaged, intermediate) in enumerate(pairs, start=1):
        rows.append((_tile(averaged[index, 0], f'layer {depth} ({name}): averaged map', size),
                     _tile(intermediate[index, 0], f'layer {depth}: intermediate mask', size)))
    rows.append((_tile(mask, 'final mask', size), np.zeros_like(rows[0][0])))
    return np.vstack([np.hstack(pair) for pair in rows])


def _unit(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _tile(values: object, label: str, size: tuple[int, int]) -> np.ndarray:
    array = values.float().cpu().numpy() if isinstance(values, torch.Tensor) else values
    scaled = cv2.resize(_unit(np.asarray(array, dtype=np.float32)), size,
                        interpolation=cv2.INTER_NEAREST)
    gray8 = (scaled * 255.0 + 0.5).astype(np.uint8)
    return _label(np.repeat(gray8[:, :, None], 3, axis=2), label)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.zeros((LABEL_HEIGHT, tile.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, tile])


def read_image(path: Path) -> np.ndarray:
    """An 8-bit gray or RGB image from a file."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f'{path}: not a readable image')
    if image.dtype != np.uint8:
        raise FrameError(f'{path}: only 8-bit images are supported, not {image.dtype}')
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4
                             else cv2.COLOR_BGR2RGB)
    return image


def image_paths(sources: list[str]) -> list[Path]:
    """Image files named directly or found in named folders (sorted naturally)."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = [p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            paths += sorted(found, key=lambda p: (len(p.stem), p.stem))
        else:
            paths.append(source)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Entry point: one PNG per image; exit code 1 when a model or image was unusable."""
    parser = argparse.ArgumentParser(prog='vbp-figure2', description=__doc__)
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--model', required=True, help='vbp_ros safetensors checkpoint')
    parser.add_argument('--out', default='runs/figure2', help='output folder (%(default)s)')
    args = parser.parse_args(argv)
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
        for path in image_paths(args.images):
            try:
                network_input = preprocess(read_image(path))
            except FrameError as error:
                print(f'vbp-figure2: skipped {error}', file=sys.stderr)
                failures += 1
                continue
            explanation = vbp.explain(torch.from_numpy(network_input)[None])
            figure = render_figure2(network_input, explanation)
            target = out / f'{path.stem}_figure2.png'
            cv2.imwrite(str(target), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
            angle = float(explanation.output.flatten()[0])
            print(f'{path.name}: output {angle:+.4f} {spec.output_unit} -> {target}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
