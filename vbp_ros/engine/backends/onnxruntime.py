"""The onnxruntime backend: the network and its VisualBackProp mask in one ``session.run``
(:class:`~vbp_ros.engine.onnx_backend.OnnxRuntimeNetwork`), at launch, in fp32; a PyTorch
network is exported in memory first."""

from __future__ import annotations

import numpy as np
import onnx

from ...models.checkpoint import ModelSpec
from ...models.loading import Model
from ...models.onnx_batch import free_batch_advice
from ..onnx_backend import OnnxRuntimeNetwork, export_onnx
from .base import SynchronousBackend


class OnnxRuntimeBackend(SynchronousBackend):
    """An ONNX graph with its mask, run by onnxruntime; the staging buffers lie channels-last
    in memory for a channels-last graph, which then reads them in place.

    Args:
        network: the graph's session.
        shape: (max_batch, C, H, W) of its input.
    """

    name = 'onnxruntime'

    def __init__(self, network: OnnxRuntimeNetwork, shape: tuple[int, ...]) -> None:
        super().__init__(shape, channels_last=network.channels_last)
        self.network = network

    @classmethod
    def open(cls, model: Model, spec: ModelSpec, shape: tuple[int, ...], device: str,
             threads: int, source: str) -> OnnxRuntimeBackend:
        """The backend of an ONNX model or of a PyTorch network exported in memory; ValueError
        (UnsupportedModelError, CheckpointError included) naming ``source`` where that fails,
        and where ``shape``'s batch exceeds a batch size that the graph fixes."""
        graph = model if isinstance(model, onnx.ModelProto) else export_onnx(
            model.cpu().float().eval(), shape[1:], source=source)
        network = OnnxRuntimeNetwork(graph, spec, device, threads, source=source)
        if network.max_batch is not None and shape[0] > network.max_batch:
            raise ValueError(f'{source}: max_batch {shape[0]} exceeds the batch size '
                             f'{network.max_batch} that the graph fixes; '
                             f'{free_batch_advice(network.input_name)}')
        return cls(network, shape)

    def run(self, slot: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One ``session.run`` on the staged rows."""
        return self.network(self.staging[slot][:count])

    @property
    def description(self) -> str:
        """'<device> (<execution provider>), fp32, onnxruntime'."""
        return f'{self.network.device} ({self.network.provider}), fp32, onnxruntime'

    def close(self) -> None:
        """Drop the session and the staging buffers."""
        super().close()
        self.network = None
