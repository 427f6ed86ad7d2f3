"""Checkpoints round-trip through safetensors and loading never unpickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vbp_ros import CheckpointError, ModelSpec, authors_net, load_checkpoint, save_checkpoint

SPEC = ModelSpec(architecture='authors', input_channels=1, input_height=125, input_width=640,
                 crop=(200, 0, 250, 640), output_unit='rad', description='test')


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = authors_net().eval()
    path = tmp_path / 'model.safetensors'
    save_checkpoint(path, model, SPEC)
    loaded, spec = load_checkpoint(path)
    assert spec == SPEC
    assert not loaded.training
    x = torch.rand(2, 1, 125, 640)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path('/tmp/vbp_ros_pickle_ran'),))


@pytest.mark.parametrize('name, message', [
    ('model.pt', 'not a state dict that torch.save wrote'),
    ('model.safetensors', 'not a readable safetensors file')])  # a pickle in disguise
def test_pickled_file_is_refused_without_unpickling(tmp_path: Path, name: str,
                                                    message: str) -> None:
    marker = Path('/tmp/vbp_ros_pickle_ran')
    marker.unlink(missing_ok=True)
    path = tmp_path / name
    path.write_bytes(pickle.dumps({'weights': Payload()}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'foreign.safetensors'
    save_file({'w': torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match='not a vbp_ros checkpoint'):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / 'wrong.safetensors'
    save_checkpoint(path, authors_net(), ModelSpec('netsvf', 1, 125, 640))
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'netsvf'.*"
                       r"of another shape \(first features.1.weight: \[8, 1, 3, 3\] given"):
        load_checkpoint(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='no such model file'):
        load_checkpoint(tmp_path / 'absent.safetensors')


@pytest.mark.parametrize('changes, pattern', [
    ({'color': 'hsv'}, 'input.color must be'), ({'output_unit': 'mph'}, 'output.unit must be'),
    ({'crop': (0, 0, 0, 10)}, 'input.crop must be'), ({'input_height': 0}, 'must be positive'),
    ({'mean': (0.1, 0.2)}, 'input.mean has 2 values for 1 input channels'),
    ({'output_index': -1}, 'output.index must not be negative'),
    # A NaN or infinite factor would publish a NaN angle on every frame, a zero scale 0.
    ({'output_scale': float('nan')}, 'output.scale must be finite, not nan'),
    ({'output_scale': 0.0}, 'output.scale must not be 0'),
    ({'std': (float('inf'),)}, 'input.std must be finite'),
    ({'mean': (float('nan'),)}, 'input.mean must be finite'),
    ({'pixel_scale': float('inf')}, 'input.scale must be finite'),
    ({'steering_ratio': float('nan')}, 'output.steering_ratio must be finite')])
def test_invalid_specs_are_refused(changes: dict, pattern: str) -> None:
    values = {'architecture': 'netsvf', 'input_channels': 1, 'input_height': 125,
              'input_width': 640, **changes}
    with pytest.raises(CheckpointError, match=pattern):
        ModelSpec(**values)
