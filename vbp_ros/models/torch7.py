"""Import of the paper authors' Torch7 steering model (``model.t7b``) into a PyTorch network.

The file is a ``nn.Sequential`` of a convolutional part (``cudnn.SpatialBatchNormalization``,
``cudnn.SpatialConvolution``, ``cudnn.ReLU`` blocks and a final batch normalization) and a head
(``nn.View``, ``nn.Linear``, ``nn.ReLU``). Its batch normalization layers use the old cudnn layout:
``running_std`` holds 1/sqrt(var + eps), which is converted back to the variance here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, ModelSpec
from .networks import SteeringCNN, authors_net

AUTHORS_SPEC = ModelSpec(
    architecture='authors', input_channels=1, input_height=125, input_width=640,
    color='gray', crop=None, pixel_scale=1.0 / 255.0, output_unit='steering_wheel_rad',
    description='VisualBackProp authors\' released Torch7 model, imported by vbp-import-t7')


def load_torch7_model(path: str | Path) -> SteeringCNN:
    """The authors' model as an :func:`authors_net` in eval mode, weights copied exactly."""
    import torchfile  # only the importer needs it

    try:
        root = torchfile.load(str(path))
    except (torchfile.T7ReaderException, OSError, ValueError, TypeError, KeyError, EOFError,
            struct.error) as error:
        raise CheckpointError(f'{path}: not a readable Torch7 file ({error})') from None
    parts = _children(root, str(path))
    if len(parts) != 2:
        raise CheckpointError(f'{path}: expected a Sequential of two parts, found {len(parts)}')
    model = authors_net()
    _copy_sequence(_children(parts[0], 'part 1'), model.features, 'features')
    _copy_sequence(_children(parts[1], 'part 2'), model.head, 'head')
    return model.eval()


def _children(module: object, where: str) -> list:
    try:
        return list(module[b'modules'])
    except (TypeError, KeyError):
        raise CheckpointError(f'{where}: not a Torch7 nn.Sequential') from None


def _copy_sequence(sources: list, targets: nn.Sequential, prefix: str) -> None:
    if len(sources) != len(targets):
        raise CheckpointError(f'{prefix}: {len(sources)} Torch7 modules for {len(targets)} '
                              'PyTorch modules')
    for index, (source, target) in enumerate(zip(sources, targets)):
        kind = source.torch_typename().decode()
        with torch.no_grad():
            _copy_module(kind, source, target, f'{prefix}.{index}')


def _copy_module(kind: str, source: object, target: nn.Module, name: str) -> None:
    expected = {nn.BatchNorm2d: 'SpatialBatchNormalization', nn.Conv2d: 'SpatialConvolution',
                nn.Linear: 'Linear', nn.ReLU: 'ReLU', nn.Flatten: 'View'}[type(target)]
    if not kind.endswith('.' + expected):
        raise CheckpointError(f'{name}: Torch7 {kind} where {expected} was expected')
    if isinstance(target, nn.BatchNorm2d):
        _copy_batch_norm(source, target)
    elif isinstance(target, nn.Conv2d):
        geometry = ((source[b'kH'], source[b'kW']), (source[b'dH'], source[b'dW']),
                    (source[b'padH'], source[b'padW']))
        if geometry != (target.kernel_size, target.stride, target.padding):
            raise CheckpointError(f'{name}: Torch7 kernel/stride/padding {geometry} differ from '
                                  f'{(target.kernel_size, target.stride, target.padding)}')
        _assign(target.weight, source[b'weight'], name)
        _assign(target.bias, source[b'bias'], name)
    elif isinstance(target, nn.Linear):
        _assign(target.weight, source[b'weight'], name)
        _assign(target.bias, source[b'bias'], name)


def _copy_batch_norm(source: object, target: nn.BatchNorm2d) -> None:
    eps = float(source[b'eps'])
    if b'running_var' in source._obj:
        variance = np.asarray(source[b'running_var'], dtype=np.float64)
    else:  # cudnn layout: running_std = 1 / sqrt(var + eps)
        inverse_std = np.asarray(source[b'running_std'], dtype=np.float64)
        variance = 1.0 / np.square(inverse_std) - eps
    target.eps = eps
    _assign(target.running_mean, source[b'running_mean'], 'batch norm mean')
    _assign(target.running_var, np.maximum(variance, 0.0), 'batch norm variance')
    _assign(target.weight, source[b'weight'], 'batch norm weight')
    _assign(target.bias, source[b'bias'], 'batch norm bias')


def _assign(tensor: torch.Tensor, values: object, name: str) -> None:
    array = np.asarray(values, dtype=np.float32)
    if array.size != tensor.numel():
        raise CheckpointError(f'{name}: {array.size} values for a tensor of shape '
                              f'{tuple(tensor.shape)}')
    tensor.copy_(torch.from_numpy(array.reshape(tensor.shape)))
