"""The torch backend on CUDA: streams, events and optional CUDA-graph capture.

Frames are staged in pinned memory, copied to the device on a copy stream, and the network and
its mask are queued on a compute stream behind the copy's event; there are two slots, so the
copy of submission N+1 overlaps the compute of submission N, and :meth:`collect` waits on its
own slot's event only. Outputs and masks come back into pinned host buffers made once.
"""

from __future__ import annotations

import gc

import torch
from torch import nn

from ...explain.vbp import VisualBackProp
from ..config import PRECISIONS
from .base import Backend, Computed
from .torch_cpu import flat_outputs

SLOTS = 2  # one submission copied while the one before computes


class TorchCudaBackend(Backend):
    """A PyTorch network and its mask on a CUDA device.

    Args:
        model: the network (put in eval mode, moved to ``device``, cast to ``precision``).
        shape: (max_batch, C, H, W) of its input.
        device: the CUDA device, resolved.
        precision: the network's, 'fp32', 'fp16' or 'bf16'.
        cuda_graphs: capture network and mask once as a CUDA graph, replayed per submission.
    """

    name = 'torch'

    def __init__(self, model: nn.Module, shape: tuple[int, ...], device: torch.device,
                 precision: str, cuda_graphs: bool) -> None:
        super().__init__(shape, SLOTS, pinned=True)
        torch.backends.cudnn.benchmark = True  # fixed input shapes
        self.device, self.precision, dtype = device, precision, PRECISIONS[precision]
        self.model = model.to(device, dtype).eval()
        self.vbp = VisualBackProp(self.model)
        self._copy_stream = torch.cuda.Stream(device)
        self._compute_stream = torch.cuda.Stream(device)

        def events() -> list[torch.cuda.Event]:
            return [torch.cuda.Event(enable_timing=True) for _ in range(SLOTS)]

        self._copy_start, self._copied = events(), events()
        self._compute_start, self._done = events(), events()
        for event in self._copied:
            event.record(self._copy_stream)
        self._device_inputs = [torch.empty(shape, device=device) for _ in range(SLOTS)]
        self._network_input = torch.zeros(shape, device=device, dtype=dtype)
        with torch.inference_mode():
            outputs = flat_outputs(self.model(self._network_input), shape[0]).shape[1]
        self._host_outputs = [torch.empty((shape[0], outputs), pin_memory=True)
                              for _ in range(SLOTS)]
        self._host_masks = [torch.empty((shape[0], 1, *shape[2:]), pin_memory=True)
                            for _ in range(SLOTS)]
        self._graph = None
        self._graph_outputs = None
        if cuda_graphs:
            self._capture_graph()

    def stage(self, slot: int) -> object:
        """The slot's pinned buffer, once the previous copy out of it is done."""
        self._copied[slot].synchronize()
        return self.staging[slot]

    def launch(self, slot: int, count: int) -> None:
        """Queue the copy to the device, then the network and its mask behind it."""
        with torch.cuda.stream(self._copy_stream):
            self._copy_start[slot].record()
            self._device_inputs[slot][:count].copy_(self.inputs[slot][:count],
                                                    non_blocking=True)
            self._copied[slot].record()
        with torch.cuda.stream(self._compute_stream), torch.inference_mode():
            self._compute_stream.wait_event(self._copied[slot])
            self._compute_start[slot].record()
            self._network_input[:count].copy_(self._device_inputs[slot][:count])
            output, mask = self._run_network(count)
            self._host_outputs[slot][:count].copy_(flat_outputs(output, count),
                                                   non_blocking=True)
            self._host_masks[slot][:count].copy_(mask, non_blocking=True)
            self._done[slot].record()

    def collect(self, slot: int, count: int) -> Computed:
        """Wait for the slot's event; copies of its outputs and masks, and the events' times."""
        self._done[slot].synchronize()
        return Computed(self._host_outputs[slot][:count].numpy().copy(),
                        self._host_masks[slot][:count, 0].numpy().copy(),
                        self._copy_start[slot].elapsed_time(self._copied[slot]),
                        self._compute_start[slot].elapsed_time(self._done[slot]))

    @property
    def description(self) -> str:
        """'cuda:N (<GPU name>), <precision>, torch'."""
        name = torch.cuda.get_device_name(self.device)
        return f'{self.device} ({name}), {self.precision}, torch'

    def close(self) -> None:
        """Drop the network, the CUDA graph and every buffer; give the cached memory back."""
        super().close()
        self.model = self.vbp = self._graph = self._graph_outputs = None
        self._device_inputs = self._network_input = None
        gc.collect()  # VisualBackProp's buffers may sit in reference cycles
        torch.cuda.empty_cache()

    def _run_network(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is not None:
            self._graph.replay()
            output, mask = self._graph_outputs
            return output[:count], mask[:count]
        return self.vbp(self._network_input[:count])

    def _capture_graph(self) -> None:
        """Capture network + mask once (at ``max_batch``) on the compute stream; replays reuse
        its memory, and smaller submissions use the first rows of its outputs."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.vbp(self._network_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, stream=self._compute_stream):
            self._graph_outputs = self.vbp(self._network_input)
        self._graph = graph
