"""What a synthetic road frame shows, apart from its pixels: the scene's parameters, the camera,
the distractors, and the ground truth that follows from them (:mod:`vbp_ros.data.synthetic` draws
the frames).

Coordinates (REP 103). Vehicle frame: x forward, y left, z up, origin at the camera's foot
point. Road frame: arc length s along the ego lane's centre line, starting beside the vehicle,
and d to the left of that line. ``curvature`` (1/m) is positive where the road bends left; the
vehicle stands at d = ``lateral_offset`` (m, positive: left of the lane centre) with
``heading`` (rad, positive: turned left of the road direction).

Ground-truth steering angle (rad, positive = turn left), pure pursuit towards the lane centre::

    (x_L, y_L) = lane-centre point at arc length L ahead, in the vehicle frame
    kappa_cmd  = 2 * y_L / (x_L**2 + y_L**2)
    angle      = atan(wheelbase * kappa_cmd)

with wheelbase 2.8 m and L = 15 m (:func:`steering_angle`). A lane centre to the left of the car
(road bending left, car right of the centre, or car turned right) gives a positive angle. On the
centre line with zero heading, kappa_cmd equals the road curvature exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ['DASH_PERIOD', 'LANE_WIDTH', 'LOOKAHEAD', 'MARKING_STYLES', 'NEAREST',
           'SHADOW_KINDS', 'WHEELBASE', 'Camera', 'Car', 'DistractorRates', 'RoadFrame',
           'SceneParams', 'Shadow', 'road_to_vehicle', 'sample_cars', 'sample_shadows',
           'steering_angle', 'still_ahead']

MARKING_STYLES = ('solid', 'dashed', 'double')
SHADOW_KINDS = ('band', 'tree')
LANE_WIDTH = 3.6
WHEELBASE = 2.8
LOOKAHEAD = 15.0
DASH_PERIOD = 9.0
NEAREST = 1.5  # m; nearer ground lies below the bottom row of the default camera


@dataclass(frozen=True)
class Camera:
    """Pinhole camera above flat ground: ``height`` (m), downward ``pitch`` (rad), ``focal``
    length as a fraction of the image width."""

    height: float = 1.5
    pitch: float = math.radians(4.0)
    focal: float = 0.75


@dataclass(frozen=True)
class DistractorRates:
    """Probability per frame of each distractor (``adjacent_lane``: per side, an unmarked
    extra lane of asphalt; ``car_beside`` only applies where there is one)."""

    shadow: float = 0.4
    stop_line: float = 0.15
    crosswalk: float = 0.15
    car_ahead: float = 0.3
    car_beside: float = 0.4
    adjacent_lane: float = 0.5
    photometric: float = 0.7
    blur: float = 0.3
    noise: float = 0.8


@dataclass(frozen=True)
class Shadow:
    """A soft dark patch on the ground: a 'band' across the road (bridge, building) from
    ``distance`` to ``distance + size`` (m), or a 'tree' blob of radius ``size`` around
    (``distance``, ``lateral``) in the road frame; ``darkness`` is the fraction of light lost."""

    kind: str
    distance: float
    lateral: float
    size: float
    darkness: float


@dataclass(frozen=True)
class Car:
    """A car whose rear is ``distance`` (m) ahead in ``lane`` (0 ego, +1 left, -1 right);
    ``body`` is its 8-bit gray level."""

    distance: float
    lane: int
    body: int


@dataclass(frozen=True)
class SceneParams:
    """Everything that decides a frame; ``detail_seed`` fixes textures, noise and shadow shapes.

    Lengths in m, angles in rad, gray levels 8-bit. ``stop_line`` and ``crosswalk`` are the
    distances of their near edges, or None when absent. ``gain`` and ``bias`` change contrast
    (around mid-gray) and brightness; ``blur_sigma`` and ``noise_sigma`` are in pixels and gray
    levels (0: off).
    """

    curvature: float
    lateral_offset: float
    heading: float
    left_marking: str
    right_marking: str
    dash_phase: float
    left_lane: bool
    right_lane: bool
    asphalt: int
    marking: int
    stop_line: float | None
    crosswalk: float | None
    shadows: tuple[Shadow, ...]
    cars: tuple[Car, ...]
    gain: float
    bias: float
    blur_sigma: float
    noise_sigma: float
    detail_seed: int

    def without_distractors(self) -> SceneParams:
        """The same road with no distractors and no photometric changes, blur or noise."""
        return replace(self, stop_line=None, crosswalk=None, shadows=(), cars=(), gain=1.0,
                       bias=0.0, blur_sigma=0.0, noise_sigma=0.0)


@dataclass(frozen=True, eq=False)
class RoadFrame:
    """One camera frame: HxW uint8 ``image``, steering ``angle`` (rad, positive = left), HxW
    bool ``lane_mask`` and ``distractor_mask`` (see the module docstring) and its ``params``."""

    image: np.ndarray
    angle: float
    lane_mask: np.ndarray
    distractor_mask: np.ndarray
    params: SceneParams


def steering_angle(curvature: float, lateral_offset: float, heading: float,
                   wheelbase: float = WHEELBASE, lookahead: float = LOOKAHEAD) -> float:
    """Pure-pursuit steering angle (rad, positive = left) towards the lane centre ``lookahead``
    metres ahead along the road; see the module docstring."""
    x, y = road_to_vehicle(np.float64(lookahead), 0.0, curvature, lateral_offset, heading)
    return math.atan(wheelbase * 2.0 * float(y) / float(x * x + y * y))


def road_to_vehicle(s: np.ndarray, d: np.ndarray | float, curvature: float,
                    lateral_offset: float, heading: float) -> tuple[np.ndarray, np.ndarray]:
    """Vehicle-frame (x, y) of the ground points at arc length ``s`` and left offset ``d``
    of the road frame."""
    bend = curvature * s
    along = s * np.sinc(bend / np.pi)  # sin(k s) / k, finite on straight roads
    across = 0.5 * bend * s * np.sinc(bend / (2.0 * np.pi)) ** 2  # (1 - cos(k s)) / k
    road_x = along - d * np.sin(bend)
    road_y = across + d * np.cos(bend) - lateral_offset
    cos, sin = math.cos(heading), math.sin(heading)
    return cos * road_x + sin * road_y, cos * road_y - sin * road_x


def still_ahead(distance: float | None, travelled: float) -> float | None:
    """A marking ``distance`` ahead after driving ``travelled``; None once passed."""
    if distance is None or distance - travelled < NEAREST:
        return None
    return distance - travelled


def sample_shadows(rng: np.random.Generator) -> tuple[Shadow, ...]:
    """One to three shadows drawn from ``rng``."""
    shadows = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(SHADOW_KINDS))
        size = rng.uniform(2.0, 8.0) if kind == 'band' else rng.uniform(1.5, 5.0)
        shadows.append(Shadow(kind, float(rng.uniform(4.0, 40.0)), float(rng.uniform(-6.0, 6.0)),
                              float(size), float(rng.uniform(0.3, 0.65))))
    return tuple(shadows)


def sample_cars(rng: np.random.Generator, rates: DistractorRates, left_lane: bool,
                right_lane: bool) -> tuple[Car, ...]:
    """The cars of a frame drawn from ``rng``: ahead, and beside in the adjacent lanes where
    there are some."""
    cars = []
    if rng.random() < rates.car_ahead:
        cars.append(Car(float(rng.uniform(10.0, 45.0)), 0, int(rng.integers(20, 80))))
    for lane, present in ((1, left_lane), (-1, right_lane)):
        if present and rng.random() < rates.car_beside:
            cars.append(Car(float(rng.uniform(6.0, 40.0)), lane, int(rng.integers(20, 80))))
    return tuple(cars)
