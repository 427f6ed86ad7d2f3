"""Synthetic road scenes: determinism, ground truth, masks and distractors."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from vbp_ros.data.synthetic import (DASH_PERIOD, DRIVE_SPEED, SCENE_SECONDS, Car,
                                    DistractorRates, RoadFrame, SceneParams, Shadow,
                                    SyntheticRoads, steering_angle)
from vbp_ros.pixels.frames import Crop, FrameError

CURVE = 1.0 / 150.0


@pytest.fixture(scope='module')
def roads() -> SyntheticRoads:
    return SyntheticRoads(seed=0)


def clean(roads: SyntheticRoads, index: int, **overrides: object) -> RoadFrame:
    """Frame ``index`` without distractors or noise, with ``overrides`` applied."""
    return roads.render(replace(roads.sample_params(index).without_distractors(), **overrides))


def straight(roads: SyntheticRoads, index: int, **overrides: object) -> RoadFrame:
    return clean(roads, index, curvature=0.0, lateral_offset=0.0, heading=0.0, **overrides)


def assert_same(first: RoadFrame, second: RoadFrame) -> None:
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.lane_mask, second.lane_mask)
    assert np.array_equal(first.distractor_mask, second.distractor_mask)
    assert first.angle == second.angle
    assert first.params == second.params


def lane_columns(frame: RoadFrame, rows: slice) -> float:
    """Mean column of the lane-marking pixels in ``rows``."""
    return float(np.nonzero(frame.lane_mask[rows])[1].mean())


def test_frames_have_the_documented_layout(roads: SyntheticRoads) -> None:
    frame = roads.frame(0)
    assert frame.image.shape == (480, 640) and frame.image.dtype == np.uint8
    for mask in (frame.lane_mask, frame.distractor_mask):
        assert mask.shape == (480, 640) and mask.dtype == bool
    assert isinstance(frame.angle, float) and isinstance(frame.params, SceneParams)


def test_same_seed_and_index_give_the_same_frame() -> None:
    assert_same(SyntheticRoads(seed=3).frame(7), SyntheticRoads(seed=3).frame(7))


def test_other_index_or_seed_gives_another_frame(roads: SyntheticRoads) -> None:
    frame = roads.frame(7)
    for other in (roads.frame(8), SyntheticRoads(seed=1).frame(7)):
        assert not np.array_equal(frame.image, other.image)
        assert frame.angle != other.angle


def test_frames_do_not_depend_on_call_order() -> None:
    in_order = SyntheticRoads(seed=5).frames(0, 4)
    backwards = SyntheticRoads(seed=5)
    for index in (3, 1, 2, 0):
        assert_same(backwards.frame(index), in_order[index])


def test_straight_centred_road_needs_no_steering(roads: SyntheticRoads) -> None:
    assert steering_angle(0.0, 0.0, 0.0) == 0.0
    assert straight(roads, 0).angle == 0.0


@pytest.mark.parametrize('curvature, offset, heading', [
    (CURVE, 0.0, 0.0), (0.0, -0.5, 0.0), (0.0, 0.0, -0.02), (CURVE, -0.5, -0.02)])
def test_lane_centre_to_the_left_steers_left(curvature: float, offset: float,
                                             heading: float) -> None:
    assert steering_angle(curvature, offset, heading) > 0.0
    assert steering_angle(-curvature, -offset, -heading) < 0.0


def test_tighter_left_curve_steers_further_left() -> None:
    angles = [steering_angle(curvature, 0.3, 0.01) for curvature in np.linspace(-CURVE, CURVE, 7)]
    assert np.all(np.diff(angles) > 0.0)
    assert steering_angle(CURVE, 0.0, 0.0) == pytest.approx(np.arctan(2.8 * CURVE))


def test_image_agrees_with_the_angle_sign(roads: SyntheticRoads) -> None:
    top = roads.crop_region.top
    far = slice(int(roads.horizon_row) + 2, top + 20)
    aligned = {'lateral_offset': 0.0, 'heading': 0.0}
    left_bend = clean(roads, 1, curvature=CURVE, **aligned)
    right_bend = clean(roads, 1, curvature=-CURVE, **aligned)
    assert lane_columns(left_bend, far) < 300 and left_bend.angle > 0.0
    assert lane_columns(right_bend, far) > 340 and right_bend.angle < 0.0
    right_of_centre = clean(roads, 1, curvature=0.0, heading=0.0, lateral_offset=-0.6,
                            left_marking='solid', right_marking='solid')
    columns = np.nonzero(right_of_centre.lane_mask[top + 40])[0]
    assert (columns.min() + columns.max()) / 2 < 300 and right_of_centre.angle > 0.0


@pytest.mark.parametrize('index', range(4))
def test_markings_are_brighter_than_the_asphalt_around_them(roads: SyntheticRoads,
                                                            index: int) -> None:
    frame = clean(roads, index)
    lane = frame.lane_mask
    around = cv2.dilate(lane.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & ~lane
    assert lane.sum() > 500
    assert frame.image[lane].mean() > frame.image[around].mean() + 80


def test_shadowed_markings_stay_markings(roads: SyntheticRoads) -> None:
    shadows = (Shadow('band', 6.0, 0.0, 10.0, 0.6), Shadow('tree', 20.0, 1.8, 4.0, 0.6))
    sunny, shaded = straight(roads, 2), straight(roads, 2, shadows=shadows)
    assert np.array_equal(sunny.lane_mask, shaded.lane_mask)
    assert shaded.image[shaded.lane_mask].mean() < sunny.image[sunny.lane_mask].mean() - 20
    lane = shaded.lane_mask
    around = cv2.dilate(lane.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & ~lane
    assert shaded.image[lane].mean() > shaded.image[around].mean() + 50


@pytest.mark.parametrize('distractor', [{'stop_line': 12.0}, {'crosswalk': 14.0}])
def test_stop_lines_and_crosswalks_are_distractors(roads: SyntheticRoads,
                                                   distractor: dict[str, float]) -> None:
    plain, marked = straight(roads, 3), straight(roads, 3, **distractor)
    assert not plain.distractor_mask.any()
    assert marked.distractor_mask.sum() > 200
    assert np.array_equal(plain.lane_mask, marked.lane_mask)
    assert np.all(marked.image[marked.distractor_mask] == marked.params.marking)


def test_distractor_mask_never_overlaps_the_lane_mask() -> None:
    busy = SyntheticRoads(seed=2, rates=DistractorRates(
        shadow=1.0, stop_line=1.0, crosswalk=1.0, car_ahead=1.0, car_beside=1.0))
    for frame in busy.frames(0, 8):
        assert frame.distractor_mask.any()
        assert not (frame.distractor_mask & frame.lane_mask).any()


def test_cars_hide_the_markings_behind_them(roads: SyntheticRoads) -> None:
    free = straight(roads, 4, stop_line=20.0)
    blocked = straight(roads, 4, stop_line=20.0, cars=(Car(10.0, 0, 40), Car(8.0, 1, 50)))
    hidden = free.lane_mask & ~blocked.lane_mask
    assert not (blocked.lane_mask & ~free.lane_mask).any()
    assert hidden.sum() > 100
    assert blocked.image[hidden].max() <= 50 + 70
    assert not (blocked.distractor_mask & ~free.distractor_mask).any()
    assert blocked.distractor_mask.sum() < free.distractor_mask.sum()


def test_crop_region_holds_the_road(roads: SyntheticRoads) -> None:
    assert roads.crop_region == Crop(230, 0, 250, 640)
    frame = straight(roads, 5)
    region = roads.crop_region.apply(frame.lane_mask)
    assert region.shape == (250, 640)
    assert region.sum() > 0.9 * frame.lane_mask.sum()
    with pytest.raises(FrameError, match='smaller than the crop'):
        Crop(300, 0, 250, 640).apply(frame.image)


def test_invalid_requests_are_refused(roads: SyntheticRoads) -> None:
    with pytest.raises(ValueError):
        roads.frame(-1)
    with pytest.raises(ValueError):
        roads.frame(0, left_marking='zigzag')


def test_generates_a_batch_of_default_frames(roads: SyntheticRoads) -> None:
    frames = roads.frames(100, 50)
    assert len(frames) == 50
    assert len({frame.angle for frame in frames}) == 50


def test_a_drive_changes_smoothly_within_a_scene(roads: SyntheticRoads) -> None:
    rate = 30.0
    drive = [roads.drive_params(index, rate) for index in range(90)]
    angles = [steering_angle(p.curvature, p.lateral_offset, p.heading) for p in drive]
    independent = [roads.frame(index).angle for index in range(90)]
    assert np.abs(np.diff(angles)).max() < 0.1 * np.abs(np.diff(independent)).mean()
    assert {(p.left_marking, p.right_marking, p.detail_seed) for p in drive} == {
        (drive[0].left_marking, drive[0].right_marking, drive[0].detail_seed)}
    assert all(abs(p.curvature) <= roads.max_curvature and abs(p.lateral_offset) <=
               roads.max_offset and abs(p.heading) <= roads.max_heading for p in drive)


def test_a_drive_moves_the_road_towards_the_camera() -> None:
    roads = SyntheticRoads(seed=3)
    scene = next(i for i in range(200) if roads.sample_params(i).stop_line is not None)
    rate = 10.0
    first = round(SCENE_SECONDS * rate) * scene
    before, after = roads.drive_params(first, rate), roads.drive_params(first + 1, rate)
    assert after.stop_line == pytest.approx(before.stop_line - DRIVE_SPEED / rate)
    assert (before.dash_phase - after.dash_phase) % DASH_PERIOD == \
        pytest.approx(DRIVE_SPEED / rate % DASH_PERIOD)
    far_ahead = roads.drive_params(first + round(SCENE_SECONDS * rate) - 1, rate)
    assert far_ahead.stop_line is None  # passed: 8 s at 15 m/s is beyond any stop line
    next_scene = roads.drive_params(first + round(SCENE_SECONDS * rate), rate)
    assert next_scene.detail_seed == roads.sample_params(scene + 1).detail_seed
    assert roads.drive_params(first, rate) == before  # a function of (seed, index) only
