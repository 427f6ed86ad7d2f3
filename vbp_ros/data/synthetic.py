"""Procedural grayscale road scenes with ground truth, for training and testing steering networks.

A flat ground plane is seen by a pinhole camera (:class:`Camera`: 1.5 m high, pitched 4 degrees
down, horizon at row 206 of a 640x480 frame). The road's ego lane (3.6 m wide) follows a circular
arc; its two boundary markings are each solid, dashed or double. Everything in a frame follows
from :class:`SceneParams`, which :meth:`SyntheticRoads.sample_params` draws from a generator
seeded with ``(seed, index)``, so a frame never depends on which frames were made before it.

The scene's parameters, its coordinates and the ground-truth steering angle (pure pursuit towards
the lane centre 15 m ahead) are in :mod:`vbp_ros.data.road_scene`, whose names this module also
offers.

Masks, both drawn from the very polygons that paint the image: ``lane_mask`` holds the two
markings that bound the ego lane (adjacent lanes, when present, are plain asphalt without
further markings); ``distractor_mask`` holds stop lines and crosswalk stripes, minus any pixel
of a lane marking. Pixels hidden by a car belong to neither mask. Shadows darken markings but
leave them in the mask.

Drives: :meth:`SyntheticRoads.drive_params` makes frames a camera would see from a car at
``DRIVE_SPEED``: one scene (markings, distractors, textures) for ``SCENE_SECONDS``, then the
next, while curvature, lateral offset and heading sway as slow sine waves within the sampled
ranges, and dashes, stop lines and crosswalks come closer.

Network crop: :attr:`SyntheticRoads.crop_region` (``(230, 0, 250, 640)`` by default: 30 m of
road ahead down to the bottom row) is the part a PilotNet-like network sees, e.g. resized to
640x125; its ``apply`` takes it from an image or a mask.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from ..pixels.frames import Crop
from .road_scene import (DASH_PERIOD, LANE_WIDTH, LOOKAHEAD, MARKING_STYLES, NEAREST,
                         SHADOW_KINDS, WHEELBASE, Camera, Car, DistractorRates, RoadFrame,
                         SceneParams, Shadow, road_to_vehicle, sample_cars, sample_shadows,
                         steering_angle, still_ahead)

__all__ = ['DASH_PERIOD', 'DRIVE_SPEED', 'LANE_WIDTH', 'LOOKAHEAD', 'MARKING_STYLES',
           'SCENE_SECONDS', 'SHADOW_KINDS', 'WHEELBASE', 'Camera', 'Car', 'DistractorRates',
           'RoadFrame', 'SceneParams', 'Shadow', 'SyntheticRoads', 'road_to_vehicle',
           'steering_angle']

MARKING_WIDTH = 0.15
DOUBLE_LINE_WIDTH = 0.1
DOUBLE_LINE_GAP = 0.12
DASH_LENGTH = 3.0
SHOULDER = 0.6
STOP_LINE_DEPTH = 0.5
STOP_LINE_MARGIN = 0.25
CROSSWALK_LENGTH = 3.0
CROSSWALK_STRIPE = 0.5
CROSSWALK_PERIOD = 1.0
CAR_WIDTH, CAR_LENGTH, CAR_HEIGHT = 1.8, 4.5, 1.4

FARTHEST = 150.0
CURVE_SAMPLES = 40
SHIFT = 3  # fractional bits of the polygon vertices handed to OpenCV
SHADE_SHIFT = 2  # shadows are drawn at 1/4 resolution, then blurred and scaled up
TEXTURE_PAD = 128
NOISE_STD = 32.0
DRIVE_SPEED = 15.0  # m/s
SCENE_SECONDS = 8.0
# Periods (s) and amplitudes (fractions of the sampling limits) of a drive's sway.
SWAY = {'curvature': (11.0, 1.0), 'lateral_offset': (6.0, 0.5), 'heading': (4.0, 0.5)}


class _Projection:
    """Vehicle-frame points to sub-pixel image coordinates, and pixels back to the ground."""

    def __init__(self, camera: Camera, width: int, height: int) -> None:
        self.focal = camera.focal * width
        self.center = (width / 2.0, height / 2.0)
        self.cos, self.sin = math.cos(camera.pitch), math.sin(camera.pitch)
        self.height = camera.height
        self.horizon = self.center[1] - self.focal * math.tan(camera.pitch)

    def to_image(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float = 0.0) -> np.ndarray:
        """(..., 2) image coordinates (u, v) of the points (x, y, z)."""
        below = self.height - z
        depth = x * self.cos + below * self.sin
        down = below * self.cos - x * self.sin
        return np.stack([self.center[0] - self.focal * y / depth,
                         self.center[1] + self.focal * down / depth], axis=-1)

    def to_ground(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground (x, y) seen at pixels (u, v); only meaningful below the horizon."""
        right, down = (u - self.center[0]) / self.focal, (v - self.center[1]) / self.focal
        reach = self.height / np.maximum(down * self.cos + self.sin, 1e-6)
        return reach * (self.cos - down * self.sin), -reach * right


class SyntheticRoads:
    """Deterministic stream of synthetic road frames: ``frame(index)`` depends on (seed, index)
    only. Textures and noise tables are made once per instance."""

    def __init__(self, seed: int = 0, width: int = 640, height: int = 480,
                 camera: Camera = Camera(), rates: DistractorRates = DistractorRates(),
                 max_curvature: float = 1.0 / 150.0, max_offset: float = 0.8,
                 max_heading: float = 0.03) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.rates = rates
        self.max_curvature = max_curvature
        self.max_offset = max_offset
        self.max_heading = max_heading
        self._projection = _Projection(camera, width, height)
        # the spawn key keeps this stream apart from every frame's default_rng([seed, index])
        tables = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        self._roadsides = self._ground_textures(tables, (100, 125, 95, 120), (16, 22, 14, 20),
                                                (14, 6, 16, 8), with_sky=True)
        self._asphalts = self._ground_textures(tables, (128, 128), (5, 7), (3, 5), with_sky=False)
        self._noise = np.clip(tables.normal(128.0, NOISE_STD, (height + TEXTURE_PAD,
                                                               width + TEXTURE_PAD)),
                              0, 255).astype(np.uint8)
        self._sway_phases = dict(zip(SWAY, tables.uniform(0.0, 2 * math.pi, len(SWAY))))

    @property
    def horizon_row(self) -> float:
        """Image row of the horizon."""
        return self._projection.horizon

    @property
    def crop_region(self) -> Crop:
        """The rectangle the network sees: from 5 % of the frame height below the horizon down
        to the bottom row, full width."""
        top = int(round(self.horizon_row + 0.05 * self.height))
        return Crop(top, 0, self.height - top, self.width)

    def frame(self, index: int, **overrides: Any) -> RoadFrame:
        """Frame ``index``; ``overrides`` replace fields of its sampled :class:`SceneParams`."""
        return self.render(replace(self.sample_params(index), **overrides))

    def frames(self, start: int, count: int) -> list[RoadFrame]:
        """Frames ``start`` to ``start + count - 1``."""
        return [self.frame(index) for index in range(start, start + count)]

    def sample_params(self, index: int) -> SceneParams:
        """The scene parameters of frame ``index``."""
        if index < 0:
            raise ValueError(f'frame index must be non-negative, not {index}')
        rng = np.random.default_rng([self.seed, index])
        rates = self.rates
        left_lane = bool(rng.random() < rates.adjacent_lane)
        right_lane = bool(rng.random() < rates.adjacent_lane)
        photometric = rng.random() < rates.photometric
        return SceneParams(
            curvature=float(rng.uniform(-self.max_curvature, self.max_curvature)),
            lateral_offset=float(rng.uniform(-self.max_offset, self.max_offset)),
            heading=float(rng.uniform(-self.max_heading, self.max_heading)),
            left_marking=str(rng.choice(MARKING_STYLES)),
            right_marking=str(rng.choice(MARKING_STYLES)),
            dash_phase=float(rng.uniform(0.0, DASH_PERIOD)),
            left_lane=left_lane, right_lane=right_lane,
            asphalt=int(rng.integers(50, 96)),
            marking=int(rng.integers(185, 241)),
            stop_line=float(rng.uniform(8.0, 30.0)) if rng.random() < rates.stop_line else None,
            crosswalk=float(rng.uniform(8.0, 35.0)) if rng.random() < rates.crosswalk else None,
            shadows=sample_shadows(rng) if rng.random() < rates.shadow else (),
            cars=sample_cars(rng, rates, left_lane, right_lane),
            gain=float(rng.uniform(0.7, 1.3)) if photometric else 1.0,
            bias=float(rng.uniform(-30.0, 30.0)) if photometric else 0.0,
            blur_sigma=float(rng.uniform(0.5, 1.5)) if rng.random() < rates.blur else 0.0,
            noise_sigma=float(rng.uniform(2.0, 8.0)) if rng.random() < rates.noise else 0.0,
            detail_seed=int(rng.integers(2**31)))

    def drive_params(self, index: int, rate_hz: float) -> SceneParams:
        """The scene parameters of frame ``index`` of a drive filmed at ``rate_hz`` (see the
        module docstring); like :meth:`sample_params`, a function of (seed, index) only."""
        if rate_hz <= 0:
            raise ValueError(f'rate must be positive, not {rate_hz}')
        scene, step = divmod(index, max(1, round(SCENE_SECONDS * rate_hz)))
        params = self.sample_params(scene)
        seconds = index / rate_hz
        limits = {'curvature': self.max_curvature, 'lateral_offset': self.max_offset,
                  'heading': self.max_heading}
        sway = {name: amplitude * limits[name] * math.sin(
                    2 * math.pi * seconds / period + self._sway_phases[name])
                for name, (period, amplitude) in SWAY.items()}
        travelled = DRIVE_SPEED * step / rate_hz
        return replace(params, **sway, dash_phase=(params.dash_phase - travelled) % DASH_PERIOD,
                       stop_line=still_ahead(params.stop_line, travelled),
                       crosswalk=still_ahead(params.crosswalk, travelled))

    def render(self, params: SceneParams) -> RoadFrame:
        """The frame that ``params`` describe."""
        detail = np.random.default_rng(params.detail_seed)
        image = self._roadside(detail)
        self._paint_road(image, params, detail)
        size = (self.height, self.width)
        lane_mask, distractor_mask = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
        lanes, distractors = self._lane_polygons(params), self._distractor_polygons(params)
        _fill(image, distractors, params.marking)
        _fill(distractor_mask, distractors, 1)
        _fill(image, lanes, params.marking)
        _fill(lane_mask, lanes, 1)
        _fill(distractor_mask, lanes, 0)  # lane markings are painted over crossing stripes
        if params.shadows:
            self._shade(image, params, detail)
        for car in sorted(params.cars, key=lambda car: -car.distance):
            self._draw_car(image, (lane_mask, distractor_mask), car, params)
        image = self._degrade(image, params, detail)
        angle = steering_angle(params.curvature, params.lateral_offset, params.heading)
        return RoadFrame(image, angle, lane_mask.view(bool), distractor_mask.view(bool), params)

    def _ground_textures(self, rng: np.random.Generator, means: tuple[int, ...],
                         coarse: tuple[int, ...], fine: tuple[int, ...], with_sky: bool
                         ) -> list[np.ndarray]:
        """Perspective-correct noise textures of the ground, TEXTURE_PAD columns wider than the
        frame so that each frame can take a randomly shifted window."""
        rows, columns = np.mgrid[0:self.height, -TEXTURE_PAD // 2:self.width + TEXTURE_PAD // 2]
        ground_x, ground_y = self._projection.to_ground(columns + 0.5, rows + 0.5)
        cell = 0.08
        tile_size = 512
        map_x = np.mod(ground_y / cell, tile_size).astype(np.float32)
        map_y = np.mod(ground_x / cell, tile_size).astype(np.float32)
        fade = (1.0 / (1.0 + ground_x / 40.0)).astype(np.float32)
        textures = []
        for mean, coarse_std, fine_std in zip(means, coarse, fine):
            tile = (coarse_std * _wrapped_noise(rng, tile_size, 12.0)
                    + fine_std * _wrapped_noise(rng, tile_size, 0.8))
            seen = cv2.remap(tile, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            texture = np.clip(mean + fade * seen, 0, 255).astype(np.uint8)
            if with_sky:
                sky_rows = int(math.ceil(self._projection.horizon))
                texture[:sky_rows] = np.linspace(215, 178, sky_rows, dtype=np.uint8)[:, None]
            textures.append(texture)
        return textures

    def _roadside(self, detail: np.random.Generator) -> np.ndarray:
        """A fresh canvas: sky and roadside texture."""
        texture = self._roadsides[detail.integers(len(self._roadsides))]
        shift = detail.integers(TEXTURE_PAD)
        return np.ascontiguousarray(texture[:, shift:shift + self.width])

    def _paint_road(self, image: np.ndarray, params: SceneParams,
                    detail: np.random.Generator) -> None:
        texture = self._asphalts[detail.integers(len(self._asphalts))]
        shift = detail.integers(TEXTURE_PAD)
        window = texture[:, shift:shift + self.width]
        asphalt = cv2.addWeighted(window, 1.0, window, 0.0, params.asphalt - 128.0)
        road = np.zeros_like(image)
        _fill(road, self._road_polygons(params), 1)
        np.copyto(image, asphalt, where=road.view(bool))

    def _road_edges(self, params: SceneParams) -> tuple[float, float]:
        """Lateral positions (right, left) of the asphalt's edges."""
        right = LANE_WIDTH / 2 + SHOULDER + (LANE_WIDTH if params.right_lane else 0.0)
        left = LANE_WIDTH / 2 + SHOULDER + (LANE_WIDTH if params.left_lane else 0.0)
        return -right, left

    def _road_polygons(self, params: SceneParams) -> list[np.ndarray]:
        right, left = self._road_edges(params)
        return self._strips(params, [NEAREST], [FARTHEST], [right], [left], CURVE_SAMPLES)

    def _lane_polygons(self, params: SceneParams) -> list[np.ndarray]:
        return (self._marking_polygons(params, params.left_marking, LANE_WIDTH / 2)
                + self._marking_polygons(params, params.right_marking, -LANE_WIDTH / 2))

    def _marking_polygons(self, params: SceneParams, style: str, boundary: float
                          ) -> list[np.ndarray]:
        if style not in MARKING_STYLES:
            raise ValueError(f'marking style must be one of {MARKING_STYLES}, not {style!r}')
        half = MARKING_WIDTH / 2
        if style == 'solid':
            return self._strips(params, [NEAREST], [FARTHEST], [boundary - half],
                                [boundary + half], CURVE_SAMPLES)
        if style == 'double':
            inner, outer = DOUBLE_LINE_GAP / 2, DOUBLE_LINE_GAP / 2 + DOUBLE_LINE_WIDTH
            return self._strips(params, [NEAREST] * 2, [FARTHEST] * 2,
                                [boundary - outer, boundary + inner],
                                [boundary - inner, boundary + outer], CURVE_SAMPLES)
        starts = params.dash_phase - DASH_PERIOD + DASH_PERIOD * np.arange(
            int(FARTHEST // DASH_PERIOD) + 2)
        near = np.clip(starts, NEAREST, FARTHEST)
        far = np.clip(starts + DASH_LENGTH, NEAREST, FARTHEST)
        visible = far > near
        count = int(visible.sum())
        return self._strips(params, near[visible], far[visible], [boundary - half] * count,
                            [boundary + half] * count, 2)

    def _distractor_polygons(self, params: SceneParams) -> list[np.ndarray]:
        polygons = []
        if params.stop_line is not None:
            inside = LANE_WIDTH / 2 - STOP_LINE_MARGIN
            polygons += self._strips(params, [params.stop_line],
                                     [params.stop_line + STOP_LINE_DEPTH], [-inside], [inside], 2)
        if params.crosswalk is not None:
            right, left = self._road_edges(params)
            first = right + (CROSSWALK_PERIOD - CROSSWALK_STRIPE) / 2
            stripes = np.arange(first, left - CROSSWALK_STRIPE, CROSSWALK_PERIOD)
            count = len(stripes)
            polygons += self._strips(params, [params.crosswalk] * count,
                                     [params.crosswalk + CROSSWALK_LENGTH] * count,
                                     stripes, stripes + CROSSWALK_STRIPE, 2)
        return polygons

    def _strips(self, params: SceneParams, near: ArrayLike, far: ArrayLike, right: ArrayLike,
                left: ArrayLike, samples: int) -> list[np.ndarray]:
        """Image polygons of ground strips from arc length ``near`` to ``far`` between the
        lateral positions ``right`` and ``left`` (one strip per element)."""
        near = np.asarray(near, np.float64)[:, None]
        far = np.asarray(far, np.float64)[:, None]
        # geometric spacing: image detail is densest near the camera
        arc = near * (far / near) ** np.linspace(0.0, 1.0, samples)
        arc = np.concatenate([arc, arc[:, ::-1]], axis=1)
        lateral = np.repeat(np.stack([np.asarray(right, np.float64),
                                      np.asarray(left, np.float64)], axis=1), samples, axis=1)
        return self._polygons(params, arc, lateral)

    def _polygons(self, params: SceneParams, arc: np.ndarray, lateral: np.ndarray,
                  z: np.ndarray | float = 0.0) -> list[np.ndarray]:
        x, y = road_to_vehicle(arc, lateral, params.curvature, params.lateral_offset,
                               params.heading)
        return list(np.round(self._projection.to_image(x, y, z) * (1 << SHIFT)).astype(np.int32))

    def _shade(self, image: np.ndarray, params: SceneParams, detail: np.random.Generator) -> None:
        """Darken the image under the shadows, with soft edges."""
        scale = 1 << SHADE_SHIFT
        light = np.full((-(-self.height // scale), -(-self.width // scale)), 255, np.uint8)
        for shadow in params.shadows:
            polygons = self._shadow_polygons(params, shadow, detail)
            cv2.fillPoly(light, polygons, int(255 * (1.0 - shadow.darkness)),
                         shift=SHIFT + SHADE_SHIFT)
        light = cv2.GaussianBlur(light, (0, 0), 1.2)
        light = cv2.resize(light, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        cv2.multiply(image, light, image, scale=1.0 / 255.0)

    def _shadow_polygons(self, params: SceneParams, shadow: Shadow,
                         detail: np.random.Generator) -> list[np.ndarray]:
        if shadow.kind == 'band':
            return self._strips(params, [shadow.distance], [shadow.distance + shadow.size],
                                [-40.0], [40.0], 8)
        turn = np.linspace(0.0, 2.0 * np.pi, 14, endpoint=False)
        radius = shadow.size * detail.uniform(0.6, 1.0, turn.size)
        arc = np.maximum(shadow.distance + radius * np.sin(turn), NEAREST)
        lateral = shadow.lateral + radius * np.cos(turn)
        return self._polygons(params, arc[None], lateral[None])

    def _draw_car(self, image: np.ndarray, masks: tuple[np.ndarray, ...], car: Car,
                  params: SceneParams) -> None:
        """Paint a box-shaped car (body, roof, rear window) and hide the masks behind it."""
        rear, front = car.distance, car.distance + CAR_LENGTH
        center, half = car.lane * LANE_WIDTH, CAR_WIDTH / 2
        arc = np.array([rear, rear, front, front] * 2)
        lateral = center + np.array([-half, half, half, -half] * 2)
        height = np.repeat([0.0, CAR_HEIGHT], 4)
        corners = np.concatenate(self._polygons(params, arc[None], lateral[None], height))
        hull = cv2.convexHull(corners)
        for target, value in ((image, car.body), *((mask, 0) for mask in masks)):
            cv2.fillConvexPoly(target, hull, value, shift=SHIFT)
        roof = corners[4:]
        window = self._polygons(params, np.full((1, 4), rear),
                                center + np.array([[-0.75, 0.75, 0.75, -0.75]]),
                                np.array([0.85, 0.85, 1.3, 1.3]))
        cv2.fillConvexPoly(image, roof, min(car.body + 40, 255), shift=SHIFT)
        cv2.fillConvexPoly(image, window[0], min(car.body + 70, 255), shift=SHIFT)

    def _degrade(self, image: np.ndarray, params: SceneParams,
                 detail: np.random.Generator) -> np.ndarray:
        """Photometric change, blur and sensor noise, in that order."""
        if params.gain != 1.0 or params.bias != 0.0:
            image = cv2.addWeighted(image, params.gain, image, 0.0,
                                    128.0 * (1.0 - params.gain) + params.bias)
        if params.blur_sigma > 0.0:
            image = cv2.GaussianBlur(image, (0, 0), params.blur_sigma)
        if params.noise_sigma > 0.0:
            row, column = detail.integers(TEXTURE_PAD, size=2)
            noise = self._noise[row:row + self.height, column:column + self.width]
            weight = params.noise_sigma / NOISE_STD
            image = cv2.addWeighted(image, 1.0, noise, weight, -128.0 * weight)
        return image


def _fill(target: np.ndarray, polygons: list[np.ndarray], value: int) -> None:
    if polygons:
        cv2.fillPoly(target, polygons, value, lineType=cv2.LINE_8, shift=SHIFT)


def _wrapped_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Seamlessly tileable (size x size) float32 noise of unit spread, smoothed by ``sigma``."""
    pad = int(3 * sigma) + 1
    noise = np.pad(rng.standard_normal((size, size)).astype(np.float32), pad, mode='wrap')
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)[pad:pad + size, pad:pad + size]
    return smooth / smooth.std()
