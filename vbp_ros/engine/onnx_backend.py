"""The ONNX Runtime backend: the network and its VisualBackProp mask in one ``session.run``.

An ONNX model gets the mask nodes of :mod:`vbp_ros.explain.onnx_vbp` appended (unless it already
has them, as ``vbp-export`` writes it); a PyTorch network is first exported in memory
(``torch.onnx.export``, the TorchScript exporter, batch dimension free). The execution provider
follows the ``device``: ``cpu``; ``cuda`` or ``cuda:N`` (CUDAExecutionProvider, from the
``onnxruntime-gpu`` package); ``tensorrt`` or ``tensorrt:N`` (TensorrtExecutionProvider, CUDA
behind it); ``auto``: CUDA where the installed onnxruntime has it, else the CPU.

Inputs are (N, C, H, W) whatever the graph takes: a channels-last graph (the card's
``input.layout: nhwc``) is fed their (N, H, W, C) transpose, without a copy where the array lies
channels-last in memory (the engine's staging buffer does).

What onnx and onnxruntime raise for a graph, in the reading, the session's start or a run, comes
out as the project's own one-line error (:class:`~vbp_ros.models.checkpoint.CheckpointError`,
:class:`~vbp_ros.explain.rules.UnsupportedModelError`) naming the model and what to do.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ..explain.layouts import NHWC
from ..models.checkpoint import CheckpointError, ModelSpec
from ..models.loading import flatten_outputs, input_element_type
from ..models.onnx_batch import free_batch_advice
from ..explain.onnx_vbp import (MASK_OUTPUT, add_visualbackprop, figure2_outputs,
                                has_visualbackprop, image_input)
from ..explain.rules import UnsupportedModelError
from ..interface import message_line
from .onnx_fold import fold_normalizations

OPSET = 20
OPSETS = (7, 23)  # the opsets torch.onnx.export writes, first and last
INPUT_NAME = 'image'
OUTPUT_NAME = 'output'
PROVIDERS = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider',
             'tensorrt': 'TensorrtExecutionProvider'}
Layers = list[tuple[str, np.ndarray, np.ndarray]]  # per kept tensor: averaged maps, masks
_ORT_PREFIX = re.compile(r'^\[ONNXRuntimeError\] : \d+ : \w+ : ')
_SOURCE_LOCATION = re.compile(r'/\S+\.(?:cc|cpp|cu|h|hpp):\d+ ')


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int],
                opset: int = OPSET, source: str = 'the network') -> onnx.ModelProto:
    """The network as an ONNX graph (input ``image`` of (N, C, H, W), outputs ``output...``,
    batch dimension free), exported in memory from a float32 copy in eval mode on the CPU;
    UnsupportedModelError naming ``source`` where the exporter fails."""
    parameter = next(model.parameters(), None)
    if parameter is not None and (parameter.device.type != 'cpu' or
                                  parameter.dtype != torch.float32):
        raise ValueError('export a float32 network on the CPU')
    model = model.eval()
    blank = torch.zeros(1, *input_shape)
    with torch.inference_mode():
        count = len(flatten_outputs(model(blank)))
    outputs = [OUTPUT_NAME] if count == 1 else [f'{OUTPUT_NAME}{i}' for i in range(count)]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _exporter_log_off():
            warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (blank,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes={name: {0: 'batch'}
                                            for name in [INPUT_NAME, *outputs]})
    except Exception as error:  # torch.onnx's errors, and whatever the traced code raises
        raise UnsupportedModelError(
            f'{source}: torch.onnx.export cannot export it at opset {opset} '
            f'({type(error).__name__}: {_reason(error)}); export it to ONNX as it allows and '
            'give that file instead, or run it with backend torch') from None
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _exporter_log_off() -> Iterator[None]:
    """The TorchScript exporter's log kept off while it runs. torch.onnx (2.13) turns it on for
    every export and leaves it on (its ``setup_onnx_logging`` tests the function
    ``_jit_is_onnx_log_enabled`` instead of its result), so that a network it cannot export
    printed its whole traced graph to stderr, hundreds of lines in the node's log before the
    one-line reason. The switch is put back as it was; without these private functions (another
    torch) the export runs as it comes."""
    switch = getattr(torch._C, '_jit_set_onnx_log_enabled', None)
    state = getattr(torch._C, '_jit_is_onnx_log_enabled', None)
    if switch is None or state is None:
        yield
        return
    enabled = state()
    switch(False)
    torch._C._jit_set_onnx_log_enabled = lambda enabled: None
    try:
        yield
    finally:
        torch._C._jit_set_onnx_log_enabled = switch
        switch(enabled)


def onnxruntime_providers(device: str) -> list:
    """The execution providers for a ``device`` value; ValueError names what is missing."""
    available = ort.get_available_providers()
    kind, _, index = device.partition(':')
    if kind == 'auto' and not index:
        kind = 'cuda' if PROVIDERS['cuda'] in available else 'cpu'
    if kind not in PROVIDERS or (index and not index.isdigit()) or (kind == 'cpu' and index):
        raise ValueError(f'unknown device {device!r} for onnxruntime; use auto, cpu, cuda[:N] '
                         'or tensorrt[:N]')
    if PROVIDERS[kind] not in available:
        raise ValueError(f'device {device!r} needs the {PROVIDERS[kind]} of onnxruntime, which '
                         f'this installation lacks (it has {", ".join(available)}; '
                         'onnxruntime-gpu brings CUDA and TensorRT)')
    if kind == 'cpu':
        return [PROVIDERS['cpu']]
    options = {'device_id': int(index or 0)}
    chain = [(PROVIDERS['cuda'], options), PROVIDERS['cpu']]
    return [(PROVIDERS['tensorrt'], options), *chain] if kind == 'tensorrt' else chain


def with_visualbackprop(model: onnx.ModelProto, spec: ModelSpec, source: str = 'model',
                        layer_outputs: bool = False) -> onnx.ModelProto:
    """``model`` with the mask output of :func:`add_visualbackprop` at the card's input size
    and layout (``model`` itself where it has one already), and the Figure 2 outputs with
    ``layer_outputs``; UnsupportedModelError naming ``source`` where the graph cannot be
    read."""
    if has_visualbackprop(model):
        return model
    try:
        return add_visualbackprop(model, image_input(model, spec.input_name),
                                  (spec.input_height, spec.input_width), spec.input_layout,
                                  layer_outputs)
    except UnsupportedModelError as error:
        raise UnsupportedModelError(f'{source}: {error}') from None
    except Exception as error:  # onnx's shape inference and reference evaluator, on any graph
        raise UnsupportedModelError(
            f'{source}: reading the graph for the mask failed ({type(error).__name__}: '
            f'{_reason(error)}); please report it with the model file') from None


def _reason(error: BaseException) -> str:
    """An exception's message on one line, without what onnxruntime adds for its developers:
    the status in front ('[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :') and the source file,
    line and C++ signature of the check that failed."""
    text = _ORT_PREFIX.sub('', message_line(error))
    while (found := _SOURCE_LOCATION.search(text)) is not None:
        text = text[:found.start()] + _after_signature(text[found.end():])
    return text or type(error).__name__


def _after_signature(text: str) -> str:
    """``text`` after a leading C++ signature, 'ns::Class::Method(args...) const '."""
    depth, index = 0, text.find('(')
    if index < 0:
        return text
    for index in range(index, len(text)):
        depth += {'(': 1, ')': -1}.get(text[index], 0)
        if depth == 0:
            break
    rest = text[index + 1:].lstrip()
    return rest[len('const'):].lstrip() if rest.startswith('const ') else rest


class OnnxRuntimeNetwork:
    """An ONNX network with its in-graph mask, run by ONNX Runtime.

    Args:
        model: the graph (with or without the mask output).
        spec: its card (input name and size).
        device: see the module docstring.
        threads: intra-op threads (0: onnxruntime's default, one per physical core).
        with_mask: False runs the network alone (for benchmarks); masks are then None.
        layer_outputs: also give every kept tensor's averaged map and intermediate mask
            (:meth:`explain`; for a graph without the mask yet).
        source: the model as errors name it (its file).

    Raises:
        UnsupportedModelError: the mask cannot be read from the graph.
        CheckpointError: onnxruntime cannot load the graph (here) or run it (on a call).
        ValueError: a device that cannot be used.
    """

    def __init__(self, model: onnx.ModelProto, spec: ModelSpec, device: str = 'auto',
                 threads: int = 0, with_mask: bool = True, layer_outputs: bool = False,
                 source: str = 'model') -> None:
        self.source = source
        try:
            self.input_name = image_input(model, spec.input_name)
        except UnsupportedModelError as error:
            raise UnsupportedModelError(f'{source}: {error}') from None
        self.channels_last = spec.input_layout == NHWC
        if with_mask:
            model = with_visualbackprop(model, spec, source, layer_outputs)
        model = fold_normalizations(model)
        providers = onnxruntime_providers(device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # its errors come as exceptions, said in one line
        # Idle threads sleep instead of spinning: spinning onnxruntime threads take the cores
        # from everything else between frames (the camera, DDS, torch in the same process).
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=providers)
        except Exception as error:  # onnxruntime's own exception types, one per status code
            raise CheckpointError(
                f'{source}: onnxruntime {ort.__version__} cannot load the graph: '
                f'{_reason(error)}; re-export the network so that it loads (standard '
                'operators, an opset and ONNX IR version that onnxruntime supports, weights that '
                'fit)') from None
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self.session.get_providers()[0] != wanted:
            raise ValueError(f'onnxruntime could not start {wanted} on device {device!r}')
        self.provider = wanted
        kind = next(kind for kind, provider in PROVIDERS.items() if provider == wanted)
        self.device = kind if kind == 'cpu' else f'{kind}:{providers[0][1]["device_id"]}'
        names = [output.name for output in self.session.get_outputs()]
        layers = figure2_outputs(names)
        self.layer_names = [tensor for tensor, _, _ in layers]
        layer_outputs = [output for _, *outputs in layers for output in outputs]
        self.output_names = [name for name in names
                             if name != MASK_OUTPUT and name not in layer_outputs]
        self.with_mask = with_mask
        if with_mask:
            self.output_names.append(MASK_OUTPUT)
        self._fetched = self.output_names + layer_outputs
        batch = next(i for i in self.session.get_inputs() if i.name == self.input_name).shape[0]
        self.max_batch = batch if isinstance(batch, int) else None
        # One of the types loading admits (models.loading.IMAGE_INPUT_TYPES): frames are cast.
        self.input_dtype = onnx.helper.tensor_dtype_to_np_dtype(
            input_element_type(model, self.input_name))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs (B, K) float32, flattened per image in output order, and masks (B, H, W), for
        inputs ``x`` (B, C, H, W) float32; CheckpointError naming the model where onnxruntime
        fails or a batch comes back with another number of rows."""
        outputs, mask, _ = self.explain(x)
        return outputs, mask

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, Layers]:
        """Like a call, and per kept tensor (shallowest first) its name, averaged maps and
        intermediate masks, (B, h, w) each: the paper's Figure 2 (none without
        ``layer_outputs``)."""
        count, shape = len(x), x.shape[1:]
        if self.channels_last:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # a view if x lies channels-last
        if x.dtype != self.input_dtype:  # 8-bit pixels are whole numbers: cast exactly
            x = x.astype(self.input_dtype)
        try:
            results = self.session.run(self._fetched, {self.input_name: x})
        except Exception as error:  # onnxruntime's own exception types, one per status code
            raise CheckpointError(
                f'{self.source}: onnxruntime failed to run the graph on {count} input'
                f'{"s" * (count != 1)} of {"x".join(map(str, shape))}: {_reason(error)}; '
                "that is the card's input size (input.channels, input.height, input.width): "
                'check those keys, and that the graph runs in onnxruntime on its own') from None
        results, pictures = results[:len(self.output_names)], results[len(self.output_names):]
        for name, result in zip(self.output_names, results):
            if result.ndim and len(result) != count:
                raise CheckpointError(
                    f"{self.source}: the graph gives {len(result)} rows of '{name}' for a batch "
                    f'of {count}, as it fixes its batch size inside; '
                    f'{free_batch_advice(self.input_name)}')
        outputs, mask = (results[:-1], results[-1][:, 0]) if self.with_mask else (results, None)
        flat = np.concatenate([np.asarray(o, np.float32).reshape(count, -1) for o in outputs],
                              axis=1)
        layers = [(name, averaged[:, 0], intermediate[:, 0]) for name, averaged, intermediate
                  in zip(self.layer_names, pictures[0::2], pictures[1::2])]
        return flat, mask, layers
