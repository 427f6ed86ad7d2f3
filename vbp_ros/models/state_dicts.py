"""State dicts as people share them, read without running code and fitted to the network.

``torch.save`` files (``.pt``, ``.pth``, Lightning's ``.ckpt``...) are read with PyTorch's
restricted loader, ``torch.load(weights_only=True)``: it rebuilds tensors and plain containers
(dict, OrderedDict, list, tuple, set) of tensors, numbers, strings and a few torch types
(``torch.Size``, dtypes, devices), here also ``argparse.Namespace`` (the arguments a training
script saves beside its weights: an attribute bag, filled with those same plain values). Any
other class or function the file names (a whole pickled model's classes, a config object, or
a hostile file's payload) becomes a :class:`_StandIn`: what the file passes to it is kept as
data and nothing of it runs, so loading cannot run code. A whole model (``torch.save(model)``,
also inside a checkpoint dict, as YOLOv5's ``{'model': model, ...}``) gives its state dict,
read from its modules' parameters and buffers, and the card names the architecture to put it
in. A TorchScript archive (``torch.jit.save``) is refused with the way to convert it.

The tensors may come bare, under a key of a training script's or PyTorch Lightning's
checkpoint (``{'state_dict': ...}``, ``{'model': ...}``), and with a prefix on every key
(``module.`` from DataParallel, ``model.`` from a wrapper, ``_orig_mod.`` from torch.compile).
:func:`fit_state_dict` tries every such entry and prefix against the network's own keys and
shapes and takes the one that fits exactly; the card's ``weights.entry`` and ``weights.prefix``
name it where several do.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from ..interface import message_line
from .checkpoint import CheckpointError

__all__ = ['TORCH_SUFFIXES', 'fit_state_dict', 'read_torch_file', 'state_misfit']

# Suffixes of files written by torch.save (and of what is mistaken for them): all read by the
# restricted loader, which tells a state dict from a pickled model or a TorchScript archive.
TORCH_SUFFIXES = ('.pt', '.pth', '.ckpt', '.bin', '.tar', '.pkl', '.ts', '.jit')
_UNSUPPORTED_GLOBAL = re.compile(r'Unsupported global: GLOBAL (\S+)')
_UNPICKLER_STOP = re.compile(r'(?:WeightsUnpickler error:\s*|^(?=Trying to load))(.+?)\s*$',
                             re.MULTILINE)  # the reason among torch's advice
_CARD_ADVICE = 'name the architecture in a model card beside it'
_SAFE_GLOBALS = [argparse.Namespace]  # beyond the restricted loader's own: see the docstring
_MAX_STAND_INS = 256  # distinct classes and functions a file may name (a ResNet's: about 10)


def read_torch_file(path: Path) -> object:
    """What ``torch.save`` wrote to ``path``, rebuilt by the restricted loader (tensors and
    plain containers), with every other class or function a :class:`_StandIn` and whole models
    as their state dicts; CheckpointError for a TorchScript archive or a file that is not one
    torch.save wrote."""
    if _is_torchscript(path):
        raise CheckpointError(
            f'{path}: a TorchScript archive (torch.jit.save), which is not loaded, as loading '
            'it runs the code inside; where you trust the file, keep its weights once: '
            f"torch.save(torch.jit.load('{path.name}').state_dict(), 'weights.pt'), and "
            f'{_CARD_ADVICE}, or export the network to ONNX')
    stand_ins: list[tuple[type, str]] = []
    while True:
        try:
            with warnings.catch_warnings(), \
                    torch.serialization.safe_globals([*_SAFE_GLOBALS, *stand_ins]):
                warnings.simplefilter('ignore')  # e.g. on the pickle protocol: errors say enough
                return _module_weights(torch.load(path, map_location='cpu', weights_only=True))
        except pickle.UnpicklingError as error:
            found = _UNSUPPORTED_GLOBAL.search(str(error))
            if found is None or len(stand_ins) == _MAX_STAND_INS:
                stop = _UNPICKLER_STOP.search(str(error))
                where = stop.group(1) if stop else message_line(error, first_line=True)
                raise CheckpointError(f'{path}: not a state dict that torch.save wrote (the '
                                      f'restricted loader stops at: {where}); save '
                                      'the weights with torch.save(model.state_dict(), ...) or '
                                      'safetensors') from None
            name = found.group(1).rstrip('.,')  # torch names builtins without their module
            name = name if '.' in name else f'builtins.{name}'
            stand_ins.append((type(name, (_StandIn,), {'stands_for': name}), name))
        except Exception as error:  # torch reports a damaged archive in many ways
            raise CheckpointError(f'{path}: not a readable torch.save file '
                                  f'({type(error).__name__}: '
                                  f'{message_line(error, first_line=True)})') from None


class _StandIn:
    """What a class or function named in a torch.save file becomes when it is read (one
    subclass per name): the arguments the file calls it with and the state it gives it, kept as
    data; none of the named code is imported or run."""

    stands_for = ''

    def __new__(cls, *args: object, **kwargs: object) -> _StandIn:
        instance = super().__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'an object made by {self.stands_for}'


def _module_weights(loaded: object) -> object:
    """``loaded`` with a whole model, at the top or as a value of a top-level mapping, replaced
    by its state dict."""
    if isinstance(loaded, Mapping):
        return {key: _module_state(value) or value for key, value in loaded.items()}
    return _module_state(loaded) or loaded


def _module_state(item: object, prefix: str = '') -> dict[str, torch.Tensor] | None:
    """The state dict of a pickled ``nn.Module`` read as a stand-in (its parameters and
    persistent buffers, its submodules' under their names); None for anything else."""
    state = item.state if isinstance(item, _StandIn) else None
    if not isinstance(state, dict) or not isinstance(state.get('_parameters'), Mapping):
        return None
    transient = state.get('_non_persistent_buffers_set') or set()
    tensors = {f'{prefix}{name}': value for name, value in state['_parameters'].items()
               if isinstance(value, torch.Tensor)}
    tensors.update((f'{prefix}{name}', value) for name, value in
                   (state.get('_buffers') or {}).items()
                   if isinstance(value, torch.Tensor) and name not in transient)
    for name, child in (state.get('_modules') or {}).items():
        tensors.update(_module_state(child, f'{prefix}{name}.') or {})
    return tensors


def fit_state_dict(expected: Mapping[str, torch.Tensor], loaded: object, entry: str,
                   prefix: str, source: str, network: str) -> dict[str, torch.Tensor]:
    """The tensors of ``loaded`` (a state dict, bare or in a checkpoint) that fit a network
    whose own state dict is ``expected``, by their names without the key prefix.

    Args:
        expected: the network's ``state_dict()``.
        loaded: what the weights file holds.
        entry: the key of ``loaded`` that holds the state dict ('' : found by fitting).
        prefix: the prefix of the keys to take and strip ('': found by fitting).
        source: the file, for messages; ``network`` names the network in them.

    Raises:
        CheckpointError: nothing fits (with what is missing, unexpected or of another shape
            where it fits best), or several entries or prefixes fit (card keys to choose).
    """
    entries = _entries(loaded)
    if entry:
        if entry not in entries:
            raise CheckpointError(f'{source}: weights.entry {entry!r} holds no tensors (the file '
                                  f'has: {_listing(entries) or "no tensors"})')
        entries = {entry: entries[entry]}
    if not entries:
        raise CheckpointError(f'{source}: holds no tensors: a state dict is a mapping of '
                              'names to tensors (torch.save(model.state_dict(), ...))')
    candidates = [(name, stem, _strip(tensors, stem)) for name, tensors in entries.items()
                  for stem in ([prefix] if prefix else _prefixes(tensors))]
    fitting = [c for c in candidates if state_misfit(expected, c[2]) is None]
    if len(fitting) == 1:
        return fitting[0][2]
    if fitting:
        raise CheckpointError(
            f'{source}: the weights of {network} are in it more than once '
            f'({"; ".join(_where(name, stem) for name, stem, _ in fitting)}); name the one '
            'to load in the model card: weights.entry, and weights.prefix for the key prefix')
    name, stem, tensors = max(candidates, key=lambda c: len(expected.keys() & c[2].keys()))
    closest = f' (closest: {_where(name, stem)})' if name or stem else ''
    raise CheckpointError(f'{source}: weights do not fit {network}{closest}: '
                          f'{state_misfit(expected, tensors)}')


def state_misfit(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
                 ) -> str | None:
    """What keeps ``given`` weights out of a network that expects ``expected``, in one line."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    reshaped = [key for key in expected if key in given
                and tuple(given[key].shape) != tuple(expected[key].shape)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing (first {missing[0]})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected (first {unexpected[0]})')
    if reshaped:
        key = reshaped[0]
        problems.append(f'{len(reshaped)} of another shape (first {key}: '
                        f'{list(given[key].shape)} given, {list(expected[key].shape)} expected)')
    return '; '.join(problems) or None


def _is_torchscript(path: Path) -> bool:
    """Whether a zip archive is TorchScript's: it holds compiled code and its constants."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('/constants.pkl') or '/code/' in name
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _entries(loaded: object) -> dict[str, dict[str, torch.Tensor]]:
    """The mappings of names to tensors in ``loaded``: itself ('') and each of its values."""
    if not isinstance(loaded, Mapping):
        return {}
    found = {'': _tensors(loaded)}
    found.update((str(key), _tensors(value)) for key, value in loaded.items()
                 if isinstance(value, Mapping))
    return {name: tensors for name, tensors in found.items() if tensors}


def _tensors(mapping: Mapping) -> dict[str, torch.Tensor]:
    return {str(key): value for key, value in mapping.items() if isinstance(value, torch.Tensor)}


def _prefixes(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """'' and every leading part of a key up to a dot ('module.', 'model.backbone.'...)."""
    stems = dict.fromkeys([''])
    for key in tensors:
        parts = key.split('.')[:-1]
        stems.update(dict.fromkeys('.'.join(parts[:count]) + '.'
                                   for count in range(1, len(parts) + 1)))
    return list(stems)


def _strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def _where(entry: str, prefix: str) -> str:
    place = f'entry {entry!r}' if entry else 'the top level'
    return f'{place}, keys with prefix {prefix!r}' if prefix else place


def _listing(entries: Mapping[str, object]) -> str:
    return ', '.join(repr(name) for name in entries if name)
