"""Keras PilotNets as tf2onnx writes them, built with ``onnx.helper`` (no TensorFlow), from the
weights of :class:`vbp_ros.models.networks.PilotNet`, so that each has a PyTorch twin.

What tf2onnx makes of a Keras model: a channels-last input (N, H, W, 3) of 0..255 pixels;
Keras' normalisation layer as ``Mul`` by 1/127.5 and ``Sub`` 1.0 (or ``Div``/``Sub``) on it;
Cropping2D as a ``Slice`` of every axis, the batch and channels whole (as tf2onnx 1.17 writes
it: test/data/tf2onnx_udacity.onnx); a ``Transpose`` to NCHW before the convolutions (its
optimiser leaves one; without it every Conv sits between two Transposes and the activations
run channels-last); Keras' Flatten of the channels-last map as ``Transpose(0, 2, 3, 1) ->
Reshape`` and Dense layers as ``MatMul + Add``.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from vbp_ros.models.networks import PilotNet

OPSET = 15
INPUT = 'input_1'
OUTPUT = 'dense_4'
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class CroppedPilotNet(nn.Module):
    """The PyTorch twin of a Cropping2D PilotNet: ``x[:, :, top:-bottom, left:-right]`` first."""

    def __init__(self, pilotnet: PilotNet, cropping: tuple[tuple[int, int], tuple[int, int]]
                 ) -> None:
        super().__init__()
        self.pilotnet, self.cropping = pilotnet, cropping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.cropping
        return self.pilotnet(x[:, :, top:-bottom or None, left:-right or None])


class _Builder:
    """Nodes and initializers, named as tf2onnx names them."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], name: str, **attributes: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [f'{name}:0'], name=name,
                                           **attributes))
        return f'{name}:0'


def keras_pilotnet(model: PilotNet, normalisation: str = 'mul',
                   cropping: tuple[tuple[int, int], tuple[int, int]] | None = None,
                   per_layer_transposes: bool = False) -> onnx.ModelProto:
    """The tf2onnx graph of a Keras PilotNet with ``model``'s weights: on (N, H, W, 3) pixels of
    0..255 it gives what ``model`` gives on the same pixels / 255 in NCHW (through its twin,
    :class:`CroppedPilotNet`, where ``cropping`` is given).

    Args:
        normalisation: 'mul' (x * (1 / 127.5) - 1) or 'div' (x / 127.5 - 1).
        cropping: Keras' Cropping2D ((top, bottom), (left, right)); the input grows by it.
        per_layer_transposes: tf2onnx without its optimiser: each Conv between a Transpose to
            NCHW and one back, the activations channels-last, Flatten a plain Reshape.
    """
    (top, bottom), (left, right) = cropping or ((0, 0), (0, 0))
    height, width = model.input_size[0] + top + bottom, model.input_size[1] + left + right
    build = _Builder()
    activation = {'relu': 'Relu', 'elu': 'Elu'}[model.activation.__name__]
    x = _normalised(build, normalisation)
    if cropping:
        whole = np.iinfo(np.int32).max  # tf2onnx 1.17 lists every axis, the others whole
        x = build.node('Slice', [x, build.constant('crop_starts', np.asarray([0, top, left, 0])),
                                 build.constant('crop_ends', np.asarray(
                                     [whole, -bottom or whole, -right or whole, whole])),
                                 build.constant('crop_axes', np.asarray([0, 1, 2, 3]))],
                       'sequential/cropping2d/strided_slice')
    if not per_layer_transposes:
        x = build.node('Transpose', [x], 'sequential/conv2d/Conv2D__6', perm=TO_NCHW)
    for index, (_, kernel, stride) in enumerate(PilotNet.CONVOLUTIONS, start=1):
        conv = getattr(model, f'conv{index}')
        name = f'sequential/conv2d_{index}'
        if per_layer_transposes:
            x = build.node('Transpose', [x], f'{name}/Conv2D__in', perm=TO_NCHW)
        x = build.node('Conv', [x, build.constant(f'{name}/kernel', _array(conv.weight)),
                                build.constant(f'{name}/bias', _array(conv.bias))],
                       f'{name}/Conv2D', kernel_shape=[kernel, kernel], strides=[stride, stride])
        if per_layer_transposes:
            x = build.node('Transpose', [x], f'{name}/Conv2D__out', perm=TO_NHWC)
        x = build.node(activation, [x], f'{name}/{activation}')
    if not per_layer_transposes:
        x = build.node('Transpose', [x], 'sequential/flatten/Reshape__20', perm=TO_NHWC)
    flat = build.constant('flatten_shape', np.asarray([-1, model.fc1.in_features]))
    x = build.node('Reshape', [x, flat], 'sequential/flatten/Reshape')
    layers = len(PilotNet.HEAD) + 1
    for index in range(1, layers + 1):
        dense = getattr(model, f'fc{index}')
        weight = _array(dense.weight).T
        if index == 1:
            weight = _channels_last_rows(weight, model)
        name = f'sequential/dense_{index}'
        x = build.node('MatMul', [x, build.constant(f'{name}/kernel', weight)], f'{name}/MatMul')
        x = build.node('Add', [x, build.constant(f'{name}/bias', _array(dense.bias))],
                       f'{name}/BiasAdd' if index < layers else OUTPUT)
        if index < layers:
            x = build.node(activation, [x], f'{name}/{activation}')
    graph = helper.make_graph(
        build.nodes, 'tf2onnx',
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ['unk__40', height, width, 3])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ['unk__41', 1])],
        build.initializers)
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                                    producer_name='tf2onnx', ir_version=8)
    onnx.checker.check_model(graph_model, full_check=True)
    return graph_model


def twin(model: PilotNet, cropping: tuple[tuple[int, int], tuple[int, int]] | None = None
         ) -> nn.Module:
    """The PyTorch network that a :func:`keras_pilotnet` graph of ``model`` equals."""
    return (CroppedPilotNet(model, cropping) if cropping else model).eval()


def _normalised(build: _Builder, normalisation: str) -> str:
    one = build.constant('sequential/lambda/sub/y', np.float32(1.0))
    if normalisation == 'mul':
        scaled = build.node('Mul', [INPUT, build.constant('sequential/lambda/mul/y',
                                                          np.float32(1 / 127.5))],
                            'sequential/lambda/mul')
    else:
        scaled = build.node('Div', [INPUT, build.constant('sequential/lambda/truediv/y',
                                                          np.float32(127.5))],
                            'sequential/lambda/truediv')
    return build.node('Sub', [scaled, one], 'sequential/lambda/sub')


def _channels_last_rows(weight: np.ndarray, model: PilotNet) -> np.ndarray:
    """The first Dense kernel (C*H*W, units), its rows reordered from PyTorch's flatten of
    (C, H, W) to Keras' flatten of (H, W, C)."""
    channels = model.CONVOLUTIONS[-1][0]
    with torch.inference_mode():
        features = model.conv5(model.conv4(model.conv3(model.conv2(model.conv1(
            torch.zeros(1, model.in_channels, *model.input_size))))))
    height, width = features.shape[2:]
    return weight.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(
        height * width * channels, -1)


def _array(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().numpy().astype(np.float32)
