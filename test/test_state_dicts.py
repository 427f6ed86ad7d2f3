"""``torch.save`` files of a state dict, as training scripts, PyTorch Lightning, DataParallel and
torch.compile write them, loaded by PyTorch's restricted loader with a card naming the
architecture; whole pickled models and TorchScript archives refused, without running them,
with the way to convert them."""

from __future__ import annotations

import argparse
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vbp_ros.models.checkpoint import CheckpointError
from vbp_ros.models.loading import load_model
from vbp_ros.models.networks import build_network
from vbp_ros.engine.build import build_engine
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.tools import export as export_tool

CARD = 'architecture: pilotnet\ninput: {color: yuv, height: 66, width: 200}\noutput: {unit: deg}\n'
FRAME = np.random.default_rng(4).integers(0, 255, (480, 640, 3), dtype=np.uint8)
MARKER = Path('/tmp/vbp_ros_torch_load_ran')


def pilotnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network('pilotnet').eval()


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + key: value for key, value in state.items()}


def saved(tmp_path: Path, name: str, content: object, card: str = CARD) -> Path:
    """``content`` written by torch.save to ``name``, with the card beside it."""
    path = tmp_path / name
    torch.save(content, path)
    path.with_suffix('.yaml').write_text(card)
    return path


def same_network(model: torch.nn.Module, expected: torch.nn.Module) -> bool:
    x = torch.rand(2, 3, 66, 200)
    with torch.inference_mode():
        return torch.equal(model(x), expected(x))


@pytest.mark.parametrize('name, shape', [
    ('bare.pt', lambda state: state),
    ('lightning.ckpt', lambda state: {'epoch': 7, 'global_step': 700,
                                      'state_dict': prefixed(state, 'model.'),
                                      'hyper_parameters': {'lr': 1e-3}}),
    ('data_parallel.pth', lambda state: prefixed(state, 'module.')),
    ('training.pth', lambda state: {'epoch': 3, 'model': state,
                                    'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1}]}}),
    ('compiled.pt', lambda state: prefixed(state, '_orig_mod.')),
    ('with_arguments.pth', lambda state: {'args': argparse.Namespace(lr=0.1, arch='pilotnet',
                                                                     crop=[60, 25]),
                                          'model_state_dict': state}),
])
def test_state_dicts_as_they_are_shared_load(tmp_path: Path, name: str, shape) -> None:
    network = pilotnet(1)
    model, spec = load_model(saved(tmp_path, name, shape(network.state_dict())))
    assert spec.architecture == 'pilotnet' and same_network(model, network)


def test_a_pt_state_dict_runs_in_the_engine_with_the_networks_angle(tmp_path: Path) -> None:
    network = pilotnet(2)
    path = saved(tmp_path, 'pilotnet.pt', {'state_dict': prefixed(network.state_dict(),
                                                                  'module.')})
    engine = build_engine(path, device='cpu')
    x = torch.from_numpy(Preprocessor(engine.spec)(FRAME))[None]
    with torch.inference_mode():
        expected = math.radians(float(network(x)[0, 0]))
    assert engine.process(FRAME).angle == pytest.approx(expected, rel=1e-5)
    out = tmp_path / 'deploy' / 'pilotnet.onnx'
    assert export_tool.main([str(path), str(out)]) == 0
    assert "weights: {entry: '', prefix: ''}" in out.with_suffix('.yaml').read_text()
    assert build_engine(out, device='cpu').process(FRAME).angle == pytest.approx(expected,
                                                                                 rel=1e-5)


def test_the_card_chooses_where_several_state_dicts_fit(tmp_path: Path) -> None:
    network, average = pilotnet(3), pilotnet(4)
    both = {'model': network.state_dict(), 'ema': average.state_dict()}
    with pytest.raises(CheckpointError, match=r"in it more than once \(entry 'model'; entry "
                       r"'ema'\); name the one to load in the model card: weights.entry"):
        load_model(saved(tmp_path, 'both.pt', both))
    model, _ = load_model(saved(tmp_path, 'ema.pt', both, CARD + 'weights: {entry: ema}\n'))
    assert same_network(model, average)
    one_dict = {**prefixed(network.state_dict(), 'net.'),
                **prefixed(average.state_dict(), 'ema_net.')}
    with pytest.raises(CheckpointError, match="keys with prefix 'net.'; the top level, keys "
                                              "with prefix 'ema_net.'"):
        load_model(saved(tmp_path, 'one.pt', one_dict))
    model, _ = load_model(saved(tmp_path, 'net.pt', one_dict,
                                CARD + 'weights: {prefix: net.}\n'))
    assert same_network(model, network)
    with pytest.raises(CheckpointError, match=r"weights.entry 'swa' holds no tensors \(the file "
                                              r"has: 'model', 'ema'\)"):
        load_model(saved(tmp_path, 'swa.pt', both, CARD + 'weights: {entry: swa}\n'))


def test_weights_that_do_not_fit_say_what_is_missing(tmp_path: Path) -> None:
    state = prefixed(pilotnet(5).state_dict(), 'module.')
    state.pop('module.fc4.bias')
    with pytest.raises(CheckpointError, match=r"weights do not fit architecture 'pilotnet' "
                       r"\(with its card arguments \{\}\) \(closest: the top level, keys with "
                       r"prefix 'module.'\): 1 missing \(first fc4.bias\)"):
        load_model(saved(tmp_path, 'short.pt', state))
    with pytest.raises(CheckpointError, match=r'holds no tensors'):
        load_model(saved(tmp_path, 'empty.pt', {'epoch': 1}))


class Payload:
    """Runs code when unpickled, as a hostile or careless file can."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


class ShellPayload:
    """Runs a shell command when unpickled (os.system, a function the file names)."""

    def __reduce__(self):
        return (os.system, (f'touch {MARKER}',))


def test_whole_models_give_their_weights_and_nothing_in_a_file_runs(tmp_path: Path) -> None:
    """A whole pickled model (torch.save(model)), also inside a checkpoint as YOLOv5 keeps it
    (half precision, beside its optimizer), gives its weights to the card's architecture: its
    classes are read as data, never imported or run (they used to refuse the file). What a
    hostile file would run, at the top or inside an argparse.Namespace, does not run: such a
    file holds no weights. A TorchScript archive, whose loading runs its code, is refused with
    how to convert it."""
    MARKER.unlink(missing_ok=True)
    network = pilotnet(6)
    model, _ = load_model(saved(tmp_path, 'full.pt', network))
    assert same_network(model, network)
    half = pilotnet(7).half()
    model, _ = load_model(saved(tmp_path, 'yolo_style.pt', {
        'epoch': 12, 'model': half, 'optimizer': None, 'args': argparse.Namespace(lr=0.01)}))
    assert same_network(model, half.float())
    for name, content in (('payload.pt', {'weights': Payload()}),
                          ('smuggled.pt', {'args': argparse.Namespace(hook=Payload())})):
        with pytest.raises(CheckpointError, match=f'{name}: not a state dict that torch.save '
                           'wrote .*: Trying to call reduce for unrecognized function an object '
                           'made by builtins.getattr'):  # Path.touch is getattr(Path, 'touch')
            load_model(saved(tmp_path, name, content))
    with pytest.raises(CheckpointError, match='shell.pt: not a state dict that torch.save wrote '
                       r'\(the restricted loader stops at: Trying to load unsupported GLOBAL '
                       r'posix.system whose module posix is blocked.\)'):
        load_model(saved(tmp_path, 'shell.pt', {'weights': ShellPayload()}))
    plain = tmp_path / 'plain.pkl'
    plain.write_bytes(pickle.dumps({'weights': Payload()}))
    with pytest.raises(CheckpointError, match='plain.pkl: not a state dict that torch.save wrote'):
        load_model(plain)
    assert not MARKER.exists()
    scripted = tmp_path / 'scripted.pt'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript's deprecation notices
        torch.jit.save(torch.jit.trace(pilotnet(6), torch.zeros(1, 3, 66, 200)), scripted)
    with pytest.raises(CheckpointError, match=r"scripted.pt: a TorchScript archive "
                       r".*torch.save\(torch.jit.load\('scripted.pt'\).state_dict\(\)"):
        load_model(scripted)
    damaged = tmp_path / 'damaged.pt'
    damaged.write_bytes((tmp_path / 'full.pt').read_bytes()[:2000])
    with pytest.raises(CheckpointError, match='damaged.pt: not a readable torch.save file'):
        load_model(damaged)
