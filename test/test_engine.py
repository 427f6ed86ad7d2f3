"""The ROS-free engine: same masks as the core, every frame layout, crops, deadlines, the
newest-frame mailbox, and flat memory."""

from __future__ import annotations

import copy
import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from waiting import wait_until
from vbp_ros import ModelSpec, VisualBackProp, authors_net
from vbp_ros.data.datasets import synthetic_spec
from vbp_ros.engine.backends.choice import resolve_device
from vbp_ros.engine.engine import VBPEngine
from vbp_ros.engine.mailbox import LatestFrameMailbox
from vbp_ros.engine.monitor import PipelineMonitor
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.pixels.frames import FrameError
from vbp_ros.pixels.overlay import DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH, draw_overlay

CROPPED = ModelSpec('authors', 1, 125, 640, crop=(200, 0, 250, 640))


@pytest.fixture(scope='module')
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    network = authors_net().eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(0.0, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return network


@pytest.fixture(scope='module')
def engine(model) -> VBPEngine:
    return VBPEngine(copy.deepcopy(model), CROPPED, device='cpu')


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 80, (480, 640), dtype=np.uint8)
    image[300:460, 100:120] = 255  # a bright marking inside the crop
    return image


def test_mask_and_angle_equal_the_core_on_the_same_input(engine, model, frame) -> None:
    result = engine.process(frame, stamp=42)
    network_input = torch.from_numpy(Preprocessor(CROPPED)(frame))[None]
    with VisualBackProp(copy.deepcopy(model)) as vbp, torch.inference_mode():
        output, mask = vbp(network_input)
    assert result.stamp == 42
    assert result.angle == pytest.approx(float(output[0, 0]), abs=1e-6)
    np.testing.assert_array_equal(result.mask, mask[0, 0].numpy())
    assert result.mask.dtype == np.float32 and result.mask.shape == (125, 640)
    assert result.frame_mask is None


def layouts(gray: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(gray, 255)[:, :, None]], axis=2)
    return {
        'mono8': (gray, 'rgb'), 'mono8 HxWx1': (gray[:, :, None], 'rgb'),
        'mono16': (gray.astype(np.uint16) * 257, 'rgb'),
        'rgb8': (rgb, 'rgb'), 'bgr8': (rgb[:, :, ::-1].copy(), 'bgr'),
        'rgb16': (rgb.astype(np.uint16) * 257, 'rgb'),
        'rgba8': (rgba, 'rgb'), 'bgra8': (rgba[:, :, [2, 1, 0, 3]].copy(), 'bgr'),
        'float32': (gray.astype(np.float32) / 255.0, 'rgb'),
    }


@pytest.mark.parametrize('layout', list(layouts(np.zeros((2, 2), np.uint8))))
def test_every_frame_layout_gives_the_gray_result(engine, frame, layout: str) -> None:
    expected = engine.process(frame)
    image, order = layouts(frame)[layout]
    result = engine.process(image, order=order)
    np.testing.assert_allclose(result.mask, expected.mask, atol=2e-3)
    assert result.angle == pytest.approx(expected.angle, abs=1e-4)


def test_colour_order_matters_for_colour_frames(engine) -> None:
    rng = np.random.default_rng(2)
    colour = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    as_rgb = engine.process(colour, order='rgb')
    as_bgr = engine.process(colour[:, :, ::-1].copy(), order='bgr')
    swapped = engine.process(colour, order='bgr')
    np.testing.assert_allclose(as_bgr.mask, as_rgb.mask, atol=1e-6)
    assert not np.allclose(swapped.mask, as_rgb.mask)


def test_mask_placed_back_into_the_frame_and_red_overlay(engine, frame) -> None:
    result = engine.process(frame, frame_mask=True)
    assert result.frame_mask.shape == frame.shape
    assert not result.frame_mask[:200].any() and not result.frame_mask[450:].any()
    assert result.frame_mask[200:450].max() > 0.9
    overlay = draw_overlay(frame, 'rgb', engine.preprocess.region(frame.shape), result.mask,
                           DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH)  # as vbp_node draws it
    assert overlay.shape == (480, 640, 3) and overlay.dtype == np.uint8
    outside = overlay[:200]
    np.testing.assert_array_equal(outside[:, :, 0], frame[:200])  # untouched outside the crop
    peak = np.unravel_index(np.argmax(result.frame_mask), frame.shape)
    red, green, _ = overlay[peak].astype(int)
    assert red - green > 100


@pytest.mark.parametrize('bad, message', [
    (np.zeros((100, 640), np.uint8), 'does not fit the model'),
    (np.zeros((0, 640), np.uint8), 'empty image'),
    (np.zeros((480, 640), np.int32), 'unsupported pixel type'),
    (np.zeros((480, 640, 2), np.uint8), 'unsupported frame shape'),
    (np.full((480, 640), np.nan, np.float32), 'NaN or infinite'),
    (np.full((480, 640), np.inf, np.float32), 'NaN or infinite'),
])
def test_bad_frames_raise_frame_error_and_the_next_frame_works(engine, frame, bad, message
                                                               ) -> None:
    with pytest.raises(FrameError, match=message):
        engine.process(bad)
    assert engine.process(frame, stamp='next').stamp == 'next'


def test_stage_times_add_up(engine, frame) -> None:
    times = engine.process(frame).times
    assert times.total_ms >= times.preprocess_ms + times.compute_ms + times.postprocess_ms - 0.5
    assert times.transfer_ms == 0.0 and times.compute_ms > 0


def test_deadline_misses_are_counted_on_the_callers_clock() -> None:
    monitor = PipelineMonitor()
    monitor.frame_done(processing_ms=40.0, latency_ms=45.0, deadline_ms=33.3)
    monitor.frame_done(processing_ms=20.0, latency_ms=25.0, deadline_ms=33.3)
    monitor.frame_done(processing_ms=900.0, latency_ms=None, deadline_ms=0.0)  # no deadline
    snapshot = monitor.snapshot()
    assert snapshot.totals['processed'] == 3 and snapshot.totals['deadline_misses'] == 1
    assert snapshot.processing_ms['max'] == 900.0
    assert snapshot.latency_ms['max'] == 45.0  # a frame without a usable stamp is left out


def test_a_batch_gives_each_frame_its_own_result(engine, frame) -> None:
    batched = VBPEngine(copy.deepcopy(engine.model), CROPPED, device='cpu', max_batch=3)
    others = [np.ascontiguousarray(frame[:, ::-1]), np.roll(frame, 40, axis=1)]
    results = batched.process_batch([frame, *others], stamps=['a', 'b', 'c'], frame_mask=True)
    assert [r.stamp for r in results] == ['a', 'b', 'c']
    for result, single in zip(results, [frame, *others]):
        alone = engine.process(single)
        np.testing.assert_allclose(result.mask, alone.mask, atol=1e-5)
        assert result.angle == pytest.approx(alone.angle, abs=1e-5)
        assert result.frame_mask.shape == (480, 640)
    with pytest.raises(ValueError, match='1 to 3 frames'):
        batched.process_batch([frame] * 4)


def test_submit_and_collect_keep_order(engine, frame) -> None:
    with pytest.raises(RuntimeError, match='no frame'):
        engine.collect()
    engine.submit(frame, stamp=1)
    with pytest.raises(RuntimeError, match='collect'):
        engine.submit(frame, stamp=2)
    assert engine.collect().stamp == 1


@pytest.mark.parametrize('kwargs, message', [
    ({'device': 'tpu'}, 'device'), ({'device': 'cuda:7'}, 'CUDA|does not exist'),
    ({'precision': 'fp8'}, 'precision'), ({'max_batch': 0}, 'max_batch'),
    ({'backend': 'tensorflow'}, 'backend'), ({'threads': -1}, 'threads'),
])
def test_invalid_settings_are_refused(model, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VBPEngine(copy.deepcopy(model), CROPPED, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only answer')
def test_auto_device_is_the_cpu_without_cuda() -> None:
    assert resolve_device('auto') == torch.device('cpu')
    with pytest.raises(ValueError, match='CUDA is not available'):
        resolve_device('cuda')


def resident_mib() -> float:
    with open('/proc/self/statm', encoding='ascii') as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20


@pytest.mark.slow
def test_memory_stays_flat_and_nothing_is_rebuilt_over_1000_frames(model, frame) -> None:
    engine = VBPEngine(copy.deepcopy(model), CROPPED, device='cpu')
    for _ in range(100):
        engine.process(frame)
    plans = dict(engine.vbp._plans)
    before = resident_mib()
    for index in range(1000):
        engine.process(frame, stamp=index)
    growth = resident_mib() - before
    assert engine.vbp._plans == plans
    assert growth < 8.0, f'resident memory grew by {growth:.1f} MiB'


def test_mailbox_keeps_only_the_newest_and_counts_drops() -> None:
    mailbox = LatestFrameMailbox()
    received = []

    def consumer() -> None:
        while (item := mailbox.get(timeout=2.0)) is not None:
            received.append(item)
            time.sleep(0.005)  # a slow worker

    worker = threading.Thread(target=consumer)
    worker.start()
    for index in range(500):  # a producer much faster than the worker
        mailbox.put(index)
        time.sleep(0.0002)
    wait_until(lambda: received[-1:] == [499], 5.0)
    mailbox.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive()
    assert received[-1] == 499, 'the newest frame always reaches the worker'
    assert received == sorted(received)
    assert mailbox.offered == 500
    assert mailbox.dropped == 500 - len(received)
    assert mailbox.dropped > 250


def test_mailbox_get_times_out_and_close_wakes_waiters() -> None:
    mailbox = LatestFrameMailbox()
    start = time.monotonic()
    assert mailbox.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.05
    waiter = threading.Thread(target=mailbox.get)
    waiter.start()
    mailbox.close()
    waiter.join(timeout=2.0)
    assert not waiter.is_alive()


def test_reduced_precision_on_the_cpu(model, frame) -> None:
    reference = VBPEngine(copy.deepcopy(model), CROPPED, device='cpu').process(frame)
    result = VBPEngine(copy.deepcopy(model), CROPPED, device='cpu',
                       precision='bf16').process(frame)
    assert result.mask.dtype == np.float32
    assert np.corrcoef(result.mask.ravel(), reference.mask.ravel())[0, 1] > 0.95
    assert result.angle == pytest.approx(reference.angle, abs=0.05)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@needs_cuda
@pytest.mark.parametrize('graphs', [False, True])
def test_cuda_engine_matches_the_cpu_and_pipelines(model, frame, graphs: bool) -> None:
    cpu = VBPEngine(copy.deepcopy(model), CROPPED, device='cpu').process(frame)
    engine = VBPEngine(copy.deepcopy(model), CROPPED, device='cuda', cuda_graphs=graphs)
    engine.submit(frame, stamp=1)
    engine.submit(np.ascontiguousarray(frame[:, ::-1]), stamp=2)  # copy overlaps compute
    first, second = engine.collect(), engine.collect()
    assert (first.stamp, second.stamp) == (1, 2)
    np.testing.assert_allclose(first.mask, cpu.mask, atol=1e-4)
    assert first.angle == pytest.approx(cpu.angle, abs=1e-4)
    assert first.times.transfer_ms > 0 and first.times.compute_ms > 0
    assert not np.allclose(second.mask, first.mask)


@pytest.mark.parametrize('backend', ['torch', 'onnxruntime'])
def test_close_lets_go_of_the_network(model, frame, backend: str) -> None:
    network = copy.deepcopy(model)
    alive = weakref.ref(network)
    engine = VBPEngine(network, CROPPED, device='cpu', backend=backend)
    engine.process(frame)
    del network
    engine.close()
    gc.collect()
    assert alive() is None  # what a deactivated lifecycle node gives back


@needs_cuda
def test_close_gives_the_cuda_memory_back(model, frame) -> None:
    engine = VBPEngine(copy.deepcopy(model), CROPPED, device='cuda', max_batch=4)
    engine.process(frame)
    active = torch.cuda.memory_allocated()
    engine.close()
    # What stays is torch's own (a cuBLAS workspace), not the network, buffers or results.
    assert torch.cuda.memory_allocated() < active
    assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() == 0


def test_mailbox_hands_over_every_camera_at_once_and_does_not_wait_for_a_quiet_one() -> None:
    mailbox = LatestFrameMailbox(['front', 'left', 'right'])
    mailbox.put('f1', 'front')
    mailbox.put('l1', 'left')
    mailbox.put('r1', 'right')
    mailbox.put('f2', 'front')  # replaces f1
    assert mailbox.take(timeout=1.0) == {'front': 'f2', 'left': 'l1', 'right': 'r1'}
    assert mailbox.dropped_by_key == {'front': 1} and mailbox.offered == 4
    # All three are live: a lone frame waits (up to gather_s) for the other two.
    late = threading.Timer(0.05, lambda: (mailbox.put('l2', 'left'),
                                          mailbox.put('r2', 'right')))
    late.start()
    mailbox.put('f3', 'front')
    assert mailbox.take(timeout=1.0, gather_s=5.0, live_s=60.0) == {
        'front': 'f3', 'left': 'l2', 'right': 'r2'}
    late.join()
    # 'right' falls quiet: once it is no longer live, nobody waits for it.
    time.sleep(0.2)
    mailbox.put('f4', 'front')
    mailbox.put('l3', 'left')
    start = time.monotonic()
    assert mailbox.take(timeout=1.0, gather_s=5.0, live_s=0.1) == {'front': 'f4', 'left': 'l3'}
    assert time.monotonic() - start < 4.0


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['torch', 'onnxruntime'])
def test_a_closing_engine_still_describes_itself(model, backend: str) -> None:
    """/diagnostics' thread reads the description at any time: a deactivation that closed the
    engine under it ended that thread, and /diagnostics stopped."""
    engine = VBPEngine(copy.deepcopy(model), CROPPED, device='cpu', backend=backend)
    description = engine.description
    assert description.endswith(f', fp32, {backend}')
    engine.close()
    assert engine.description == description


class SpectralHead(torch.nn.Module):
    """A steering net whose head takes a Fourier transform, which torch.onnx cannot export."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.flatten(torch.relu(self.conv(x)), 1)
        return torch.fft.rfft(features).abs()[:, :1]


def test_auto_falls_back_to_torch_where_the_export_fails_and_says_why(frame, capfd) -> None:
    """backend auto on the CPU exports a PyTorch network for onnxruntime; one the exporter
    cannot take runs in torch, with the reason for /diagnostics, and without the exporter's
    dump of the traced graph on stderr (hundreds of lines for a real network)."""
    torch.manual_seed(0)
    network = SpectralHead().eval()
    engine = VBPEngine(copy.deepcopy(network), CROPPED, device='cpu', backend='auto')
    result = engine.process(frame)
    engine.close()
    assert engine.backend == 'torch'
    assert engine.backend_note.startswith('onnxruntime not used: ')
    assert "'aten::fft_rfft'" in engine.backend_note
    network_input = torch.from_numpy(Preprocessor(CROPPED)(frame))[None]
    with VisualBackProp(network) as vbp, torch.inference_mode():
        output, mask = vbp(network_input)
    assert result.angle == pytest.approx(float(output[0, 0]), rel=1e-5)
    np.testing.assert_allclose(result.mask, mask[0, 0].numpy(), atol=1e-6)
    captured = capfd.readouterr()
    assert 'graph(' not in captured.err + captured.out
    assert not torch._C._jit_is_onnx_log_enabled()


def test_the_region_rule_in_words_names_a_scaling_only_where_there_is_one() -> None:
    """The node logs it once per frame size: '..., scaled to (230, 0, 250, 640)' for the very
    camera the crop is stated for read as if the crop had been changed."""
    preprocess = Preprocessor(synthetic_spec('authors'))
    assert preprocess.rule((480, 640)) == (
        'crop (230, 0, 250, 640) of the 640x480 camera (top, left, height, width)')
    assert preprocess.rule((960, 1280)) == ('crop (230, 0, 250, 640) of the 640x480 camera, '
                                            'scaled to (460, 0, 500, 1280) (top, left, height, '
                                            'width)')
