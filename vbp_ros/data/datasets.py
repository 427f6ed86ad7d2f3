"""Network-ready steering sets: synthetic roads (with ground-truth regions) or an ingested
Udacity-format set, stored as 8-bit network pixels and scaled per batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import ModelSpec, default_color
from ..models.networks import ARCHITECTURES, build_network
from ..models.preprocess import Preprocessor
from .synthetic import SyntheticRoads

_ROADS = SyntheticRoads()
SYNTHETIC_CROP = _ROADS.crop_region.as_tuple()
SYNTHETIC_CAMERA = (_ROADS.width, _ROADS.height)


def synthetic_spec(architecture: str = 'authors', arguments: dict | None = None) -> ModelSpec:
    """The camera set-up of the synthetic roads: a 640x480 frame, the road below the horizon
    resized to the network's own input (``in_channels`` and ``input_size`` of the network
    built with ``arguments``): 1x125x640 gray for the paper's networks, 3x66x200 RGB for
    PilotNet."""
    arguments = dict(arguments or {})
    network = build_network(architecture, **arguments)
    height, width = network.input_size
    return ModelSpec(architecture=architecture, input_channels=network.in_channels,
                     input_height=height, input_width=width, arguments=arguments,
                     color=default_color(network.in_channels), crop=SYNTHETIC_CROP,
                     camera_size=SYNTHETIC_CAMERA, pixel_scale=1.0 / 255.0, output_unit='rad',
                     description='trained by vbp-train on vbp_ros synthetic roads')


@dataclass
class SteeringSet:
    """Network pixels (N, C, H, W) uint8, angles (N,) float32 rad, and for synthetic sets the
    lane and distractor regions (N, 1, H, W) bool at network resolution."""

    pixels: np.ndarray
    angles: np.ndarray
    lanes: np.ndarray | None = None
    distractors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.angles)

    def inputs(self, indices: np.ndarray | slice, spec: ModelSpec) -> torch.Tensor:
        """Float32 network inputs for ``indices``, scaled as the engine scales camera frames
        (the card's pixel scale, mean and std)."""
        return torch.from_numpy(Preprocessor(spec).scale(self.pixels[indices]))


def synthetic_set(seed: int, start: int, count: int, spec: ModelSpec,
                  regions: bool = False) -> SteeringSet:
    """Frames ``start`` to ``start + count - 1`` of the synthetic roads of ``seed``."""
    roads = SyntheticRoads(seed=seed)
    preprocess = Preprocessor(spec)
    shape = (count, *preprocess.shape)
    pixels = np.empty(shape, np.uint8)
    angles = np.empty(count, np.float32)
    lanes = np.empty((count, 1, *shape[2:]), bool) if regions else None
    distractors = np.empty_like(lanes) if regions else None
    for offset in range(count):
        frame = roads.frame(start + offset)
        pixels[offset] = preprocess.planes(frame.image)
        angles[offset] = frame.angle
        if regions:
            lanes[offset, 0] = network_region(preprocess, frame.lane_mask)
            distractors[offset, 0] = network_region(preprocess, frame.distractor_mask)
    return SteeringSet(pixels, angles, lanes, distractors)


def network_region(preprocess: Preprocessor, region: np.ndarray) -> np.ndarray:
    """A full-frame boolean region at network resolution: a network pixel belongs to it when
    at least a quarter of its area does (thin distant markings survive the downscaling), by
    area whatever interpolation the card gives the frames."""
    coverage = preprocess.resize(preprocess.crop(region.astype(np.uint8) * 255), 'area')
    return coverage >= 64


def npz_spec(path: str, architecture: str) -> ModelSpec:
    """The card of ``architecture`` trained on a vbp-ingest set: gray frames, cut from the
    camera frames by the set's crop (stated for their size, where the set records one, as
    vbp-ingest has since it recorded it) and shrunk by area as vbp-ingest shrank them, so that
    vbp_node feeds the network what it was trained on; ValueError for a network that does not
    take gray frames."""
    spec = synthetic_spec(architecture)
    if spec.input_channels != 1:
        gray = [name for name in sorted(ARCHITECTURES) if build_network(name).in_channels == 1]
        raise ValueError(f'{path} holds gray frames (vbp-ingest); --architecture {architecture} '
                         f'takes {spec.input_channels} channels: train {" or ".join(gray)} on it')
    with np.load(path, allow_pickle=False) as data:
        if 'meta' not in data or 'frames' not in data:
            raise ValueError(f'{path} is not a training set written by vbp-ingest')
        meta = json.loads(str(data['meta']))
    camera = meta.get('camera_size')
    return replace(spec, crop=tuple(meta['crop']), interpolation='area',
                   camera_size=tuple(camera) if camera else None,
                   description=f'trained by vbp-train on {Path(path).name} (vbp-ingest: '
                               f'{", ".join(meta.get("image_topics", [])) or "camera frames"})')


def npz_set(path: str, spec: ModelSpec) -> SteeringSet:
    """A training set written by vbp-ingest (frames already at the network input size)."""
    with np.load(path) as data:
        frames, angles = data['frames'], data['angles'].astype(np.float32)
    expected = (spec.input_height, spec.input_width)
    if frames.shape[1:] != expected:
        raise ValueError(f'{path}: frames are {frames.shape[1:]}, the network takes {expected} '
                         f'(vbp-ingest --size {expected[1]}x{expected[0]} writes them)')
    return SteeringSet(frames[:, None], angles)
