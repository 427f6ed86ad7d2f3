"""Which backend runs a network, decided once when the engine is built.

``torch`` runs PyTorch networks (on the CPU, or on CUDA with streams and optional CUDA graphs);
``onnxruntime`` runs ONNX models, and PyTorch networks exported in memory, in fp32 without CUDA
graphs; ``auto`` takes onnxruntime for ONNX models and for PyTorch networks on the CPU in fp32
without CUDA graphs (where it is faster), torch otherwise, and falls back to torch where the
export or the graph reading fails, saying why.
"""

from __future__ import annotations

import onnx
import torch

from ...explain.rules import UnsupportedModelError
from ...models.checkpoint import ModelSpec
from ...models.loading import Model
from ..config import EngineConfig
from .base import Backend
from .onnxruntime import OnnxRuntimeBackend
from .torch_cpu import TorchCpuBackend
from .torch_cuda import TorchCudaBackend


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N', checked."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'unsupported device {name!r}; use auto, cpu, cuda or cuda:N')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available')
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f'device {name!r} does not exist '
                             f'({torch.cuda.device_count()} CUDA devices)')
        if device.index is None:
            device = torch.device('cuda', torch.cuda.current_device())
    return device


def open_backend(model: Model, spec: ModelSpec, config: EngineConfig, shape: tuple[int, ...],
                 source: str) -> tuple[Backend, str]:
    """The backend that runs ``model`` as ``config`` asks, for inputs of ``shape`` (max_batch,
    C, H, W), and why it is another than asked ('' when it is not); ValueError naming
    ``source`` (the model) or the setting that cannot work."""
    wanted = config.backend
    if isinstance(model, onnx.ModelProto):
        if wanted == 'torch':
            raise ValueError('backend torch runs PyTorch networks; this model is ONNX '
                             '(use backend onnxruntime or auto)')
        wanted = 'onnxruntime'
    elif wanted == 'auto':
        if _onnxruntime_suits(config):
            try:
                return _onnxruntime(model, spec, config, shape, source), ''
            except (UnsupportedModelError, RuntimeError, ValueError) as error:
                return _torch(model, config, shape), f'onnxruntime not used: {error}'
        wanted = 'torch'
    if wanted == 'onnxruntime':
        if config.precision != 'fp32' or config.cuda_graphs:
            raise ValueError('backend onnxruntime runs fp32 without cuda_graphs; use backend '
                             'torch for fp16, bf16 or CUDA graphs')
        return _onnxruntime(model, spec, config, shape, source), ''
    return _torch(model, config, shape), ''


def _onnxruntime_suits(config: EngineConfig) -> bool:
    """Whether ``auto`` takes onnxruntime for a PyTorch network: off CUDA, fp32, no graphs."""
    on_cuda = config.device.startswith('cuda') or (config.device == 'auto' and
                                                   torch.cuda.is_available())
    return not on_cuda and config.precision == 'fp32' and not config.cuda_graphs


def _onnxruntime(model: Model, spec: ModelSpec, config: EngineConfig, shape: tuple[int, ...],
                 source: str) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend.open(model, spec, shape, config.device, config.threads, source)


def _torch(model: torch.nn.Module, config: EngineConfig, shape: tuple[int, ...]) -> Backend:
    device = resolve_device(config.device)
    if config.cuda_graphs and device.type != 'cuda':
        raise ValueError('cuda_graphs needs a CUDA device')
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == 'cuda':
        return TorchCudaBackend(model, shape, device, config.precision, config.cuda_graphs)
    return TorchCpuBackend(model, shape, config.precision)
