"""One loader for every model the package runs: vbp_ros checkpoints, the user's own PyTorch
networks (a ``state_dict`` as safetensors or as a ``torch.save`` file, plus a card naming the
architecture) and ONNX files, each with its model card.

:func:`open_model` is the one way from a model file (and its card, and overrides) to a
:class:`LoadedModel`: the network, its :class:`~vbp_ros.models.checkpoint.ModelSpec`, the file,
the card that applied, the format; the card is read, the overrides applied and the card checked
against the network there, once. The node, the engine builder, vbp-review, vbp-fleet and the
tools all load through it (:func:`load_model` gives its network and spec as a pair, and
:func:`load_checkpoint` a PyTorch network on a device).

No code runs from a model file: weights are safetensors, ONNX (with its external data files
beside it) or ``torch.save`` files read by PyTorch's restricted loader
(:mod:`vbp_ros.models.state_dicts`). An ONNX graph exported with a fixed batch size is made to
take any batch (:mod:`vbp_ros.models.onnx_batch`). Loading checks the card against the network
(input channels and size, the output index) and names the card key that does not fit, instead of
surfacing a torch or onnx traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import onnx
import torch
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model, uses_external_data
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..explain.layouts import NCHW
from ..explain.onnx_vbp import MASK_OUTPUT, graph_input_layout, image_input
from ..explain.rules import UnsupportedModelError
from ..interface import message_line
from .cards import apply_overrides, card_path_for, read_card, spec_from_card
from .checkpoint import (CARD_KEYS, COLORS, FORMAT, CheckpointError, ModelSpec,
                         check_fits_in_memory, check_regular_file, color_channels,
                         default_model_path)
from .onnx_batch import free_batch
from .state_dicts import TORCH_SUFFIXES, fit_state_dict, read_torch_file

__all__ = ['MODEL_FORMATS', 'LoadedModel', 'MissingCardError', 'Model', 'check_model',
           'input_element_type', 'load_checkpoint', 'load_model', 'model_card_path',
           'onnx_input_fields', 'open_model']

Model = nn.Module | onnx.ModelProto
ONNX_SUFFIX = '.onnx'
MAX_MODEL_MB = 2048  # the default limit of a model's files (vbp_node's max_model_mb)
PROTOBUF_LIMIT = 2**31 - 1  # protobuf's most bytes in one message: an ONNX file without data
SAFETENSORS_SUFFIX = '.safetensors'
ONNX, SAFETENSORS, TORCH_SAVE = 'onnx', 'safetensors', 'torch.save'
#: The model file formats by suffix (lower case).
MODEL_FORMATS = {ONNX_SUFFIX: ONNX, SAFETENSORS_SUFFIX: SAFETENSORS,
                 **dict.fromkeys(TORCH_SUFFIXES, TORCH_SAVE)}


IMAGE_INPUT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                     TensorProto.UINT8)  # what a frame is fed as (the engine casts to it)
PIXEL_INPUTS = (TensorProto.UINT8,)  # 8-bit pixels, unscaled


_TF2ONNX = ("{kind} goes through ONNX, converted where it loads: python -m tf2onnx.convert "
            "{flag} --output model.onnx (docs/own-network.md, 'From Keras')")
OTHER_FORMATS = {  # how files of other frameworks become a model vbp_ros takes; {path}: theirs
    '.h5': _TF2ONNX.format(kind='a Keras model', flag='--keras {path}'),
    '.keras': _TF2ONNX.format(kind='a Keras model', flag='--keras {path}'),
    '.pb': _TF2ONNX.format(kind='a TensorFlow SavedModel', flag='--saved-model {path.parent}'),
    '.tflite': _TF2ONNX.format(kind='a TensorFlow Lite model', flag='--tflite {path}'),
    **dict.fromkeys(('.engine', '.plan', '.trt'), 'a TensorRT engine is built for one GPU and '
                    'holds no graph to read: give the ONNX file it was built from'),
}


class MissingCardError(CheckpointError):
    """A model that needs a card (an ONNX file, a plain state dict) and has none."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model file and its card, checked against each other: everything that the engine and
    the tools take from a model file (:func:`open_model`).

    Attributes:
        network: an ``nn.Module`` in eval mode on the CPU, or an ``onnx.ModelProto`` (its batch
            dimension free where it can be).
        spec: the card: the checkpoint's own, then the card's values, then the overrides.
        source: the model file.
        card: the card file that applied; None for a checkpoint's own card alone or card values
            given as a mapping.
        format: one of :data:`MODEL_FORMATS`' values: 'onnx', 'safetensors' or 'torch.save'.
        bundled: whether ``source`` is the bundled default model, as no path was given.
    """

    network: Model
    spec: ModelSpec
    source: Path
    card: Path | None
    format: str
    bundled: bool = False

    @property
    def name(self) -> str:
        """The model as people name it, with the card that applied: a path, or 'bundled default
        (default.safetensors)'."""
        name = f'bundled default ({self.source.name})' if self.bundled else str(self.source)
        return f'{name} (card {self.card})' if self.card else name


def model_card_path(model_path: str | Path, card: str | Path | None = None) -> Path | None:
    """The card that applies: ``card`` if given, else the one beside the model if it exists."""
    if card:
        return Path(card)
    beside = card_path_for(model_path)
    return beside if beside.is_file() else None


def open_model(path: str | Path | None, card: str | Path | Mapping | None = None,
               overrides: Mapping | str | None = None,
               max_model_mb: float = MAX_MODEL_MB) -> LoadedModel:
    """The one way from a model file to a network and its card, checked against each other.

    Args:
        path: a ``.safetensors`` file (vbp_ros checkpoint, or a ``state_dict`` whose card names
            the architecture), a ``torch.save`` file of a ``state_dict`` (``.pt``, ``.pth``...;
            its card names the architecture) or an ``.onnx`` file; '' or None: the bundled
            default model.
        card: the model card (YAML); default: the file beside the model with its stem
            (required for ONNX files and plain state dicts; a vbp_ros checkpoint carries its
            own, which such a card overrides); or the card's values by dotted key, for a card
            not written yet (vbp-card checks its template so), errors then naming ``path``.
        overrides: card values that win over the card's (a mapping or YAML text, keys nested or
            dotted), e.g. from node parameters.
        max_model_mb: the most MB that the model's files (with an ONNX model's external data)
            may hold, checked before any is read, as is the memory left to the process.

    Raises:
        CheckpointError: naming the file, and the card key where the card is at fault.
    """
    source = Path(path) if path else default_model_path()
    max_bytes = int(max_model_mb * 2**20)
    check_regular_file(source, max_bytes, 'model file', 'max_model_mb')
    check_fits_in_memory(source, source.stat().st_size)
    model_format = MODEL_FORMATS.get(source.suffix.lower())
    if model_format is None:
        hint = OTHER_FORMATS.get(source.suffix.lower(), '').format(path=source)
        raise CheckpointError(f'{source}: unknown model type {source.suffix.lower()!r}; use '
                              '.safetensors, .onnx or a state dict saved by torch.save '
                              f'({", ".join(TORCH_SUFFIXES)}){hint and "; " + hint}')
    card_file = None if isinstance(card, Mapping) else model_card_path(source, card)
    card_values = _CardValues.read(card, card_file, overrides, source)
    if model_format == ONNX:
        network, spec = _open_onnx(source, card_values, max_bytes)
    else:
        network, spec = _open_weights(source, model_format, card_values)
    check_model(network, spec, str(source))
    return LoadedModel(network, spec, source, card_file, model_format, bundled=not path)


def load_model(path: str | Path | None, card: str | Path | Mapping | None = None,
               overrides: Mapping | str | None = None,
               max_model_mb: float = MAX_MODEL_MB) -> tuple[Model, ModelSpec]:
    """``(network, spec)`` of :func:`open_model` (same arguments): an ``nn.Module`` in eval mode
    on the CPU, or an ``onnx.ModelProto``, and its card, checked against each other."""
    loaded = open_model(path, card, overrides, max_model_mb)
    return loaded.network, loaded.spec


@dataclass(frozen=True)
class _CardValues:
    """The card of a model file, read once: its values (None: no card), where errors say they
    come from, and the overrides that win over them."""

    values: Mapping | None
    source: str
    overrides: Mapping | str | None

    @classmethod
    def read(cls, card: str | Path | Mapping | None, card_file: Path | None,
             overrides: Mapping | str | None, model: Path) -> _CardValues:
        if isinstance(card, Mapping):
            return cls(card, str(model), overrides)
        return cls(read_card(card_file) if card_file else None, str(card_file or model),
                   overrides)

    def spec(self, base: ModelSpec | dict | None) -> ModelSpec:
        """The card over ``base`` (a checkpoint's own spec, or fields an ONNX graph fixes),
        then the overrides."""
        spec = base if self.values is None else spec_from_card(self.values, base, self.source)
        return apply_overrides(spec, self.overrides)


def _open_onnx(path: Path, card: _CardValues, max_bytes: int
               ) -> tuple[onnx.ModelProto, ModelSpec]:
    graph = load_onnx(path, max_bytes)
    if card.values is None:
        raise MissingCardError(
            f'{path}: an ONNX model needs a model card: {card_path_for(path).name} beside it, '
            "or one named by --card (vbp_node: the 'model_card' parameter); vbp-card writes "
            'a template')
    fields = onnx_input_fields(graph)
    spec = card.spec(fields)
    if spec.input_layout != fields.get('input_layout', NCHW):  # the card's layout
        spec = card.spec(onnx_input_fields(graph, spec.input_layout))
    return free_batch(graph, _image_input(graph, spec, str(path)), str(path)), spec


def _open_weights(path: Path, model_format: str, card: _CardValues
                  ) -> tuple[nn.Module, ModelSpec]:
    metadata, weights = (_read_safetensors(path) if model_format == SAFETENSORS
                         else (None, read_torch_file(path)))
    embedded = (ModelSpec.from_metadata(metadata, str(path))
                if metadata and metadata.get('format') == FORMAT else None)
    if embedded is None and card.values is None:
        raise MissingCardError(
            f'{path}: not a vbp_ros checkpoint and no model card: weights of your own '
            f'network need {card_path_for(path).name} beside them, or one named by --card '
            "(vbp_node: the 'model_card' parameter), naming the architecture")
    spec = card.spec(embedded)
    if not spec.architecture:
        raise CheckpointError(f'{card.source}: architecture missing: weights need the network '
                              'that they belong to')
    return _build(spec, weights, path), spec


def load_checkpoint(path: str | Path | None, device: str | torch.device = 'cpu',
                    card: str | Path | None = None) -> tuple[nn.Module, ModelSpec]:
    """A PyTorch network (eval mode, on ``device``) and its card, loaded by :func:`open_model`:
    for the tools that need the network itself (training, evaluation, Figure 2)."""
    if path is not None and MODEL_FORMATS.get(Path(path).suffix.lower()) == ONNX:
        raise CheckpointError(f'{path}: an ONNX model; this needs a PyTorch network '
                              '(safetensors weights, or a state dict with its card)')
    loaded = open_model(path, card)
    return loaded.network.to(device).eval(), loaded.spec


def check_model(model: Model, spec: ModelSpec, source: str = 'model') -> None:
    """Refuse a card that contradicts the network, naming the card key: input channels, input
    size (a forward pass on a blank input for PyTorch networks), the output index."""
    if isinstance(model, onnx.ModelProto):
        outputs = _check_onnx(model, spec, source)
    else:
        outputs = _check_torch(model, spec, source)
    if outputs is not None and spec.output_index >= outputs:
        raise CheckpointError(f'{source}: output.index {spec.output_index} is out of range: the '
                              f'network gives {outputs} output{"s" * (outputs != 1)} per image')


def _read_safetensors(path: Path) -> tuple[dict | None, dict]:
    try:
        with safe_open(str(path), framework='pt') as handle:
            metadata = handle.metadata()
        return metadata, load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f'{path}: not a readable safetensors file ({error})') from None


def _build(spec: ModelSpec, weights: object, path: Path) -> nn.Module:
    """The card's architecture with the weights of the file (a state dict, or a checkpoint
    that holds one: :func:`~vbp_ros.models.state_dicts.fit_state_dict`)."""
    try:
        model = spec.build()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f'{path}: cannot build {spec.architecture!r}: {error}') from None
    state = fit_state_dict(model.state_dict(), weights, spec.weights_entry,
                           spec.weights_prefix, str(path),
                           f'architecture {spec.architecture!r} (with its card arguments '
                           f'{spec.arguments})')
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_onnx(path: Path, max_bytes: int = MAX_MODEL_MB * 2**20) -> onnx.ModelProto:
    """An ONNX file with its external data files, checked by onnx.checker (CheckpointError
    otherwise, saying what to do). Every file is checked before it is read: the graph file
    within protobuf's limit, each external data file a regular file beside it, and all of them
    together within ``max_bytes`` and the memory left."""
    check_regular_file(path, min(max_bytes, PROTOBUF_LIMIT), 'single ONNX file (protobuf; '
                       'larger weights go in external data files)', 'max_model_mb')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError for files that are not ONNX at all
        raise CheckpointError(f'{path}: not an ONNX model ({type(error).__name__}: '
                              f'{message_line(error)}); give the .onnx file that '
                              'torch.onnx.export or tf2onnx wrote') from None
    _check_external_data(model, path, max_bytes)
    try:
        load_external_data_for_model(model, str(path.parent))
    except (onnx.checker.ValidationError, OSError, ValueError) as error:
        raise CheckpointError(f'{path}: not a valid ONNX model ({message_line(error)}); keep '
                              'the external data files of its export beside it') from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise CheckpointError(f'{path}: not a valid ONNX model ({message_line(error)}); export '
                              'the network again so that onnx.checker.check_model accepts it, '
                              'with standard operators') from None
    return model


def _check_external_data(model: onnx.ModelProto, path: Path, max_bytes: int) -> None:
    """Check the external data files that ``model`` names before any is read."""
    locations = {entry.value for tensor in _external_tensors(model)
                 for entry in tensor.external_data if entry.key == 'location'}
    total = path.stat().st_size
    for location in sorted(locations):
        data = path.parent / location
        if data.resolve().parent != path.parent.resolve():
            raise CheckpointError(f'{path}: its external data file {location!r} is not beside '
                                  'it; keep the external data files of its export beside it')
        if not data.exists():
            raise CheckpointError(f'{path}: not a valid ONNX model (its external data file '
                                  f'{location!r} is missing); keep the external data files of '
                                  'its export beside it')
        check_regular_file(data, max_bytes, 'model file', 'max_model_mb')
        total += data.stat().st_size
    if total > max_bytes:
        raise CheckpointError(f'{path}: {total} bytes with its external data; a model is at '
                              f'most {max_bytes / 2**20:g} MB (max_model_mb)')
    check_fits_in_memory(path, total)


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors whose data lies in external files, in the graph and its subgraphs."""
    found, graphs = [], [model.graph]
    while graphs:
        graph = graphs.pop()
        found += [tensor for tensor in graph.initializer if uses_external_data(tensor)]
        for node in graph.node:
            for attribute in node.attribute:
                tensors = [*attribute.tensors] + \
                    ([attribute.t] if attribute.type == onnx.AttributeProto.TENSOR else [])
                found += [tensor for tensor in tensors if uses_external_data(tensor)]
                graphs += [*attribute.graphs] + \
                    ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else [])
    return found


def onnx_input_fields(model: onnx.ModelProto, layout: str = '') -> dict[str, object]:
    """What the graph fixes about its image input, as spec fields: its name, its layout where
    the graph shows it (:func:`~vbp_ros.explain.onnx_vbp.graph_input_layout`), and channels,
    height and width where they are fixed, read in ``layout`` if given (the card's), else in
    the layout the graph shows, else NCHW."""
    try:
        name = image_input(model)
    except UnsupportedModelError:
        return {}
    found = graph_input_layout(model, name)
    fields: dict[str, object] = {'input_name': name}
    if found:
        fields['input_layout'] = found[0]
    if input_element_type(model, name) in PIXEL_INPUTS:
        fields['pixel_scale'] = 1.0  # the graph scales its 8-bit pixels itself
    for field_name, size in _input_sizes(model, name, layout or fields.get('input_layout', NCHW)):
        if size:
            fields[field_name] = size
    return fields


def _input_sizes(model: onnx.ModelProto, name: str, layout: str
                 ) -> list[tuple[str, int | None]]:
    """(spec field, size or None) of the image input's channels, height and width."""
    dims = dict(zip(layout, _input_dims(model, name)))
    return [(field_name, dims.get(axis)) for field_name, axis in
            (('input_channels', 'c'), ('input_height', 'h'), ('input_width', 'w'))]


def input_element_type(model: onnx.ModelProto, name: str) -> int:
    """The element type (a TensorProto.DataType) of the graph input ``name``."""
    return next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type


def _check_input_type(model: onnx.ModelProto, name: str, spec: ModelSpec, source: str) -> None:
    """Refuse an image input of a type no frame becomes, and a card that scales the pixels
    an 8-bit input takes as they are."""
    elem_type = input_element_type(model, name)
    type_name = TensorProto.DataType.Name(elem_type).lower()
    if elem_type not in IMAGE_INPUT_TYPES:
        raise CheckpointError(
            f"{source}: the image input '{name}' is {type_name}; vbp_ros feeds images as "
            f'{", ".join(TensorProto.DataType.Name(t).lower() for t in IMAGE_INPUT_TYPES)}')
    if elem_type in PIXEL_INPUTS and (spec.pixel_scale != 1.0 or any(spec.mean)
                                      or any(value != 1.0 for value in spec.std)):
        raise CheckpointError(
            f"{source}: the graph's input '{name}' takes {type_name} pixels as they are, so "
            f'input.scale must be 1.0, input.mean 0 and input.std 1 (the card has '
            f'{spec.pixel_scale:g}, {list(spec.mean)} and {list(spec.std)}); the graph scales '
            'them itself')


def _input_dims(model: onnx.ModelProto, name: str) -> list[int | None]:
    info = next(i for i in model.graph.input if i.name == name)
    return [d.dim_value if d.HasField('dim_value') else None
            for d in info.type.tensor_type.shape.dim]


def _image_input(model: onnx.ModelProto, spec: ModelSpec, source: str) -> str:
    try:
        return image_input(model, spec.input_name)
    except UnsupportedModelError as error:
        raise CheckpointError(f'{source}: {error}') from None


def _check_inference_mode(model: onnx.ModelProto, source: str) -> None:
    """Refuse a graph exported in training mode: its BatchNormalization normalizes by the
    statistics of the batch, so each frame's angle and mask would depend on the frames run
    with it (the eval-mode graph gives others again)."""
    for node in model.graph.node:
        if node.op_type == 'BatchNormalization' and any(
                a.name == 'training_mode' and a.i for a in node.attribute):
            raise CheckpointError(
                f"{source}: node '{node.name}' (BatchNormalization) is in training mode: it "
                'normalizes by the statistics of the batch, so the angle and mask of a frame '
                'would depend on the frames run with it; export the network after '
                'model.eval() (torch.onnx.export(..., training=TrainingMode.EVAL))')


def _check_onnx(model: onnx.ModelProto, spec: ModelSpec, source: str) -> int | None:
    name = _image_input(model, spec, source)
    dims = _input_dims(model, name)
    if len(dims) != 4:
        raise CheckpointError(f"{source}: the image input '{name}' has {len(dims)} dimensions, "
                              'not 4 (batch, channels, height, width, in some order)')
    _check_input_type(model, name, spec, source)
    initializers = {t.name for t in model.graph.initializer}
    others = [i.name for i in model.graph.input if i.name not in initializers and i.name != name]
    if others:
        raise CheckpointError(
            f"{source}: the graph takes inputs besides the image '{name}' "
            f'({", ".join(map(repr, others))}), and vbp_ros feeds a network camera frames '
            'only: export it with those inputs fixed (as constants)')
    _check_inference_mode(model, source)
    found = graph_input_layout(model, name)
    if found and found[0] != spec.input_layout:
        raise CheckpointError(f"{source}: input.layout is {spec.input_layout} but the graph's "
                              f"input '{name}' is {found[0]}: {found[1]}")
    for field_name, graph_value in _input_sizes(model, name, spec.input_layout):
        card_value = getattr(spec, field_name)
        if graph_value and graph_value != card_value:
            if field_name == 'input_channels':
                raise CheckpointError(f"{source}: {_channels(spec)} but the graph's input "
                                      f"'{name}' has {_fitting_colors(graph_value)}")
            raise CheckpointError(f"{source}: {CARD_KEYS[field_name]} is {card_value} but the "
                                  f"graph's input '{name}' has {graph_value}")
    counts = []
    for output in model.graph.output:
        if output.name == MASK_OUTPUT:
            continue
        sizes = [d.dim_value if d.HasField('dim_value') else None
                 for d in output.type.tensor_type.shape.dim][1:]
        if None in sizes:
            return None
        counts.append(int(torch.Size(sizes).numel()))
    return sum(counts) or None


def _channels(spec: ModelSpec) -> str:
    """The card's input channels and the colour they follow from (one card key or both)."""
    return f'input.channels is {spec.input_channels} (input.color {spec.color})'


def _fitting_colors(channels: int) -> str:
    """A network input's channel count, with the card colours that give it."""
    fitting = [color for color in COLORS if color_channels(color) == channels]
    return f'{channels}' + (f' (input.color {" or ".join(fitting)})' if fitting else '')


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((name, module) for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d)), None)


def _check_torch(model: nn.Module, spec: ModelSpec, source: str) -> int:
    if spec.input_layout != NCHW:
        raise CheckpointError(f'{source}: input.layout is {spec.input_layout}, but PyTorch '
                              f'networks take {NCHW} images; leave input.layout out')
    first = _first_conv(model)
    if first is not None and first[1].in_channels != spec.input_channels:
        raise CheckpointError(
            f"{source}: {_channels(spec)} but the network's first convolution '{first[0]}' "
            f'takes {_fitting_colors(first[1].in_channels)}')
    blank = torch.zeros(1, spec.input_channels, spec.input_height, spec.input_width)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        blank = blank.to(parameter.device, parameter.dtype)
    try:
        with torch.inference_mode():
            output = model(blank)
    except Exception as error:  # the user's forward() may fail in any way on a wrong size
        raise CheckpointError(
            f'{source}: the network does not take the card\'s input of {spec.input_channels}x'
            f'{spec.input_height}x{spec.input_width} (input.channels, input.height, '
            f'input.width): {type(error).__name__}: '
            f'{message_line(error, first_line=True)}') from None
    return sum(t.numel() for t in flatten_outputs(output))


def flatten_outputs(output: object) -> list[torch.Tensor]:
    """A network's output (a tensor, or a tuple, list or dict of tensors) as a list of tensors,
    in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in flatten_outputs(item)]
    raise CheckpointError(f'the network returned a {type(output).__name__}, not tensors')
