"""vbp_node over real DDS: the console script in its own process, a test publisher and subscriber.

The node and the harness come from node_harness.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[1]

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vbp_ros import ModelSpec, authors_net, save_checkpoint  # noqa: E402
from vbp_ros.engine.build import build_engine  # noqa: E402
from vbp_ros.pixels.encodings import decode_raw, mask_to_mono8  # noqa: E402

from bombs import BOMBS  # noqa: E402
from dds_segments import own_segments, stop  # noqa: E402
from node_harness import Harness, camera_frame, raw, start_node  # noqa: E402
from service_calls import call_until_answered  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def node_process(ros, checkpoint):
    process = start_node('--params-file', str(REPOSITORY / 'config' / 'vbp.yaml'),
                         '-p', f'model:={checkpoint}', '-p', 'deadline_ms:=1000.0')
    yield process
    process.send_signal(signal.SIGINT)
    process.wait(timeout=15)


@pytest.fixture(scope='module')
def harness(node_process) -> Harness:
    harness = Harness()
    frame = camera_frame(0)
    assert harness.send(raw(frame), timeout=60.0) is not None, 'vbp_node did not answer'
    yield harness
    harness.node.destroy_node()


def test_mask_and_angle_equal_the_engine_for_a_known_frame(harness, checkpoint) -> None:
    frame = camera_frame(1)
    angles_before = len(harness.angles)
    mask = harness.send(raw(frame))
    expected = build_engine(checkpoint, device='cpu').process(frame)  # the node's defaults
    assert (mask.encoding, mask.width, mask.height, mask.step) == ('mono8', 640, 125, 640)
    received = np.frombuffer(mask.data, np.uint8).reshape(125, 640)
    np.testing.assert_array_equal(received, mask_to_mono8(expected.mask))
    # Float32 has no header: the frame's angle is among those received since it was sent
    # (a repeat of an earlier frame may still arrive in between).
    assert harness.spin_until(lambda: any(
        abs(angle - np.float32(expected.angle)) < 1e-6
        for angle in harness.angles[angles_before:]),
        5.0)
    assert mask.header.frame_id == 'camera_optical'


def test_an_nv12_camera_is_answered_with_the_mask_of_its_picture(harness, checkpoint) -> None:
    """A 4:2:0 camera (Jetson, libcamera): the node reads the luma and chroma planes and
    answers with the mask of the picture they carry."""
    gray = camera_frame(6)
    planes = np.vstack([gray, np.full((240, 640), 128, np.uint8)])  # neutral chroma
    message = Image(height=480, width=640, encoding='nv12', step=640, data=planes.tobytes())
    mask = harness.send(message)
    picture, order = decode_raw('nv12', 480, 640, 640, False, planes.tobytes())
    expected = build_engine(checkpoint, device='cpu').process(picture, order=order)
    received = np.frombuffer(mask.data, np.uint8).reshape(125, 640)
    np.testing.assert_array_equal(received, mask_to_mono8(expected.mask))


def test_overlay_only_when_subscribed_with_the_input_header(harness) -> None:
    harness.send(raw(camera_frame(2)))
    harness.spin_until(lambda: harness.latest_diagnostics(), 3.0)
    assert harness.latest_diagnostics()['overlays published'] == '0'
    harness.subscribe_overlay()
    frame = camera_frame(3)
    deadline = time.monotonic() + 10.0
    stamp = None
    while time.monotonic() < deadline and stamp not in harness.overlays:
        message = raw(frame)
        harness.send(message)
        stamp = message.header.stamp.sec
        harness.spin_until(lambda: stamp in harness.overlays, 0.5)
    overlay = harness.overlays[stamp]
    assert (overlay.encoding, overlay.width, overlay.height) == ('rgb8', 640, 480)
    assert overlay.header.frame_id == 'camera_optical'
    pixels = np.frombuffer(overlay.data, np.uint8).reshape(480, 640, 3)
    np.testing.assert_array_equal(pixels[:200, :, 1], frame[:200])  # above the crop: untouched


def test_reliable_bag_playback_qos(harness) -> None:
    """input_qos reliable takes a reliable publisher's frames; a best-effort publisher on the
    topic, which it cannot receive, is a WARN on /diagnostics saying so (before, only the
    publisher's side logged it, and the node's status stayed OK while no frame came)."""
    assert harness.set_parameter('input_qos', 'reliable') == (True, '')
    assert harness.send(raw(camera_frame(4)), publisher=harness.reliable) is not None
    warned = 'publishers of /image send best effort, which the reliable subscription cannot ' \
             'receive: set input_qos to auto or sensor_data'
    assert harness.spin_until(lambda: warned in (harness.latest_status() or
                                                 DiagnosticStatus()).message, 5.0)
    assert harness.latest_status().level == DiagnosticStatus.WARN
    assert harness.set_parameter('input_qos', 'sensor_data') == (True, '')
    assert harness.send(raw(camera_frame(5))) is not None
    assert harness.spin_until(lambda: 'input' not in harness.latest_diagnostics(), 5.0)


BAD_RAW = {
    'unsupported encoding': dict(encoding='nv24', height=480, width=640, step=1280,
                                 data=bytes(480 * 1280)),
    'data too short': dict(encoding='mono8', height=480, width=640, step=640,
                           data=bytes(480 * 640 - 7)),
    'data too long': dict(encoding='mono8', height=480, width=640, step=640,
                          data=bytes(480 * 640 + 640)),
    'zero width': dict(encoding='mono8', height=480, width=0, step=0, data=b''),
    'zero height': dict(encoding='mono8', height=0, width=640, step=640, data=b''),
    'step below width x channels': dict(encoding='rgb8', height=480, width=640, step=640,
                                        data=bytes(480 * 640)),
    'NaN in a float image': dict(encoding='32FC1', height=480, width=640, step=2560,
                                 data=np.full((480, 640), np.nan, np.float32).tobytes()),
    'infinity in a float image': dict(encoding='32FC1', height=480, width=640, step=2560,
                                      data=np.full((480, 640), np.inf, np.float32).tobytes()),
    'smaller than the crop': dict(encoding='mono8', height=300, width=640, step=640,
                                  data=bytes(300 * 640)),
}


def drop_then_recover(harness: Harness, bad: Image | CompressedImage, good: Image | CompressedImage
                      ) -> None:
    before = harness.invalid_count()
    harness.stamp(bad)
    publisher = harness.compressed if isinstance(bad, CompressedImage) else harness.best_effort
    assert harness.spin_until(
        lambda: publisher.publish(bad) or harness.invalid_count() > before, 10.0), \
        'the bad frame was not counted as invalid'
    assert harness.send(good) is not None, 'the next good frame was not processed'


@pytest.mark.parametrize('case', list(BAD_RAW))
def test_bad_raw_frames_are_dropped_and_counted(harness, case: str) -> None:
    drop_then_recover(harness, Image(**BAD_RAW[case]), raw(camera_frame(6)))


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode('.jpg', frame)[1].tobytes()


def test_compressed_input_and_bad_compressed_frames(harness) -> None:
    assert harness.set_parameter('input_transport', 'compressed') == (True, '')
    try:
        good = CompressedImage(format='jpeg', data=jpeg(camera_frame(7)))
        assert harness.send(good) is not None
        png = CompressedImage(format='png',
                              data=cv2.imencode('.png', camera_frame(8))[1].tobytes())
        assert harness.send(png) is not None
        for data in (jpeg(camera_frame(9))[:3000], b'\x00garbage' * 100,
                     b'\x89PNG\r\n\x1a\n' + b'\x00' * 50):
            drop_then_recover(harness, CompressedImage(format='jpeg', data=data), good)
    finally:
        assert harness.set_parameter('input_transport', 'raw') == (True, '')


def test_mask_encoding_32fc1_gives_the_float_mask(harness, checkpoint) -> None:
    assert harness.set_parameter('mask_encoding', '32FC1') == (True, '')
    try:
        frame = camera_frame(10)
        mask = harness.send(raw(frame))
        assert (mask.encoding, mask.step) == ('32FC1', 640 * 4)
        expected = build_engine(checkpoint, device='cpu').process(frame).mask
        np.testing.assert_array_equal(np.frombuffer(mask.data, np.float32).reshape(125, 640),
                                      expected)
    finally:
        assert harness.set_parameter('mask_encoding', 'mono8') == (True, '')


@pytest.mark.parametrize('name, value, reason', [
    ('mask_encoding', 'rgb8', 'mask_encoding must be one of'),
    ('input_qos', 'fastest', 'input_qos must be one of'),
    ('precision', 'fp64', 'precision must be one of'),
    ('device', 'tpu', 'device'),
    ('device', 'cuda', 'CUDA is not available'),
    ('cuda_graphs', True, 'cuda_graphs needs a CUDA device'),
    ('model', '/nonexistent/model.safetensors', 'no such model file'),
    ('deadline_ms', -5.0, ''),
    ('overlay_alpha', 1.5, ''),
    ('attention_roi', [0.0, 1.0, 1.0, 1.0], 'attention_roi: the region of interest needs'),
    ('attention_roi', [0.0, 1.0, 1.0, 1.0, 0.5, -0.5], 'must lie in [0, 1]'),
    ('attention_alarm_frames', 0, ''),
])
def test_invalid_parameter_changes_are_refused(harness, name: str, value: object,
                                               reason: str) -> None:
    if name == 'device' and value == 'cuda' and torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    before = harness.get_parameter(name)
    successful, message = harness.set_parameter(name, value)
    assert not successful
    assert reason in message
    assert harness.get_parameter(name) == before
    assert harness.send(raw(camera_frame(11))) is not None


def test_valid_runtime_changes_take_effect(harness, checkpoint) -> None:
    assert harness.set_parameter('max_age_ms', 50.0) == (True, '')
    try:
        old = raw(camera_frame(12))  # stamped seconds after 1970: far older than 50 ms
        before = int(harness.latest_diagnostics().get('dropped (stale)', 0))
        harness.stamp(old)
        assert harness.spin_until(lambda: harness.best_effort.publish(old) or int(
            harness.latest_diagnostics().get('dropped (stale)', 0)) > before, 10.0)
    finally:
        assert harness.set_parameter('max_age_ms', 0.0) == (True, '')
    assert harness.set_parameter('model', str(checkpoint)) == (True, '')  # reload
    assert harness.set_parameter('device', 'CPU ') == (True, '')  # normalised to 'cpu'
    assert harness.get_parameter('device') == 'cpu'
    assert harness.send(raw(camera_frame(13))) is not None


def test_every_parameter_can_be_read_at_once_as_ros2_param_dump_does(harness) -> None:
    """rclpy's get_parameters answers nothing while any parameter asked for has no value:
    with image_topics declared by type alone, `ros2 param dump /vbp` printed no parameters."""
    client = AsyncParameterClient(harness.node, '/vbp')
    assert client.wait_for_services(timeout_sec=30)
    listed = client.list_parameters()
    assert harness.spin_until(listed.done, 10.0)
    names = sorted(listed.result().result.names)
    values = client.get_parameters(names)
    assert harness.spin_until(values.done, 10.0)
    assert len(values.result().values) == len(names) >= 25
    read = dict(zip(names, values.result().values))
    assert read['image_topics'].string_array_value == []
    assert read['deadline_ms'].double_value == 1000.0
    successful, reason = harness.set_parameter('image_topics', ['/front/image_raw'])
    assert not successful and 'image_topics is read at start' in reason
    assert harness.get_parameter('image_topics') == []


def test_diagnostics_report_the_pipeline(harness) -> None:
    harness.send(raw(camera_frame(14)))
    count = len(harness.diagnostics)
    assert harness.spin_until(lambda: len(harness.diagnostics) > count, 3.0)
    values = harness.latest_diagnostics()
    assert int(values['frames processed']) > 0
    assert int(values['frames received']) >= int(values['frames processed'])
    assert int(values['dropped (invalid)']) >= len(BAD_RAW)
    assert float(values['pipeline latency p50 (ms)']) > 0
    assert values['device'].startswith('cpu') and values['model'].endswith('.safetensors')


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_clean_exit_on_signal(ros, checkpoint, sig: signal.Signals) -> None:
    process = start_node('-p', f'model:={checkpoint}', '-r', '__ns:=/signal_test')
    try:
        deadline = time.monotonic() + 60.0
        output = ''
        while time.monotonic() < deadline and 'ready' not in output:
            output += process.stdout.readline()
        assert 'ready' in output, output
        process.send_signal(sig)
        remaining, _ = process.communicate(timeout=15)
    finally:
        stop(process)
    assert process.returncode == 0, remaining
    assert 'Traceback' not in remaining and 'never retrieved' not in remaining


def test_clean_exit_after_serving_parameter_requests(ros, checkpoint) -> None:
    """The multi-threaded executor's threads are joined: a SIGINT right after a parameter
    request left the process waiting for an idle pool thread in about one run of four; the
    set services' own thread stops too, and nothing is left unretrieved ('The following
    exception was never retrieved: cannot use Destroyable', seen in two logs)."""
    probe = rclpy.create_node('exit_probe')
    try:
        for run in range(3):
            process = start_node('-p', f'model:={checkpoint}', '-r', f'__ns:=/exit_test{run}')
            client = probe.create_client(GetParameters, f'/exit_test{run}/vbp/get_parameters')
            setter = probe.create_client(SetParameters, f'/exit_test{run}/vbp/set_parameters')
            call_until_answered(probe, client, GetParameters.Request(names=['deadline_ms']))
            call_until_answered(probe, setter, SetParameters.Request(parameters=[
                Parameter('deadline_ms', value=50.0).to_parameter_msg()]))
            process.send_signal(signal.SIGINT)
            try:
                output, _ = process.communicate(timeout=20)
            finally:
                stop(process)
            assert process.returncode == 0, output
            assert 'Traceback' not in output and 'never retrieved' not in output, output
            probe.destroy_client(client)
            probe.destroy_client(setter)
    finally:
        probe.destroy_node()


@pytest.mark.parametrize('camera', ['stops', 'goes on'])
def test_after_a_stop_signal_the_frames_of_a_camera_still_publishing_are_answered(
        ros, checkpoint, camera: str) -> None:
    """A Ctrl-C reaches the camera driver and vbp_node at once, and the frames the camera
    sent until it noticed went unanswered: the last camera frame of a recorded launch had no
    mask in 4 of 12 runs on busy cores. vbp_node answers while a camera publisher remains;
    one that never stops holds it up for at most STOP_GRACE_S."""
    process = start_node('-p', f'model:={checkpoint}', '-p', 'deadline_ms:=1000.0',
                         '-r', '__ns:=/stop_grace')
    harness = Harness('/stop_grace')
    try:
        assert harness.send(raw(camera_frame(0)), timeout=60.0) is not None, 'no answer'
        process.send_signal(signal.SIGINT)
        sent_at = time.monotonic()
        stamps = []
        while process.poll() is None and time.monotonic() - sent_at < 20.0:
            if camera == 'stops' and len(stamps) == 5:  # 0.25 s of frames after the signal
                harness.node.destroy_publisher(harness.best_effort)
                harness.node.destroy_publisher(harness.reliable)
                break
            message = raw(camera_frame(len(stamps) + 1))
            stamps.append(harness.stamp(message))
            harness.best_effort.publish(message)
            harness.spin_until(lambda: False, 0.05)
        output = process.communicate(timeout=20)[0]
        harness.settle()
    finally:
        stop(process)
        harness.node.destroy_node()
    assert process.returncode == 0, output
    answered = [stamp in harness.masks for stamp in stamps]
    if camera == 'stops':
        assert answered[-1] and sum(answered) >= 3, (answered, output)
    else:
        assert time.monotonic() - sent_at < 15.0 and any(answered), (answered, output)


@pytest.mark.parametrize('executable, started',
                         [('vbp_node', 'ready'), ('vbp_lifecycle_node', 'unconfigured')])
def test_a_stopped_node_leaves_no_shared_memory_behind(ros, checkpoint, executable: str,
                                                       started: str) -> None:
    """Its Fast DDS segment (0.5 MiB, 64 MiB with config/fastdds.xml) is removed at a clean
    exit: every run of the node used to leave it in /dev/shm until reboot."""
    process = start_node('-p', f'model:={checkpoint}', '-r', f'__ns:=/shm_{executable}',
                         executable=executable)
    try:
        output = ''
        while started not in output and (line := process.stdout.readline()):
            output += line
        assert started in output, output
        segments = own_segments(process.pid)
        assert segments, f'no Fast DDS segment of its own in /proc/{process.pid}/maps'
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=30)[0]
    finally:
        stop(process)
    assert process.returncode == 0, output
    assert not {path for path in segments if path.exists()}, output


def test_without_a_model_the_bundled_default_is_used(ros) -> None:
    process = start_node('-r', '__ns:=/default_model_test')
    try:
        deadline = time.monotonic() + 60.0
        output = ''
        while time.monotonic() < deadline and 'ready' not in output:
            output += process.stdout.readline()
        assert 'ready' in output and 'default.safetensors' in output, output
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    assert process.returncode == 0


def test_parameter_file_applies_in_any_namespace(ros, checkpoint, tmp_path: Path) -> None:
    text = (REPOSITORY / 'config' / 'vbp.yaml').read_text()
    assert 'deadline_ms: 33.3' in text
    params = tmp_path / 'vbp.yaml'
    params.write_text(text.replace('deadline_ms: 33.3', 'deadline_ms: 12.5'))
    process = start_node('--params-file', str(params), '-p', f'model:={checkpoint}',
                         '-r', '__ns:=/params_test')
    node = rclpy.create_node('params_probe')
    try:
        client = node.create_client(GetParameters, '/params_test/vbp/get_parameters')
        # The service exists from the node's creation; it answers once the node spins, after
        # its model is loaded (slow on a loaded machine).
        answer = call_until_answered(node, client, GetParameters.Request(names=['deadline_ms']))
        assert answer.values[0].double_value == 12.5
    finally:
        node.destroy_node()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)


def test_8k_frame_is_processed_without_stalling(harness) -> None:
    """Rule: frames up to 8192x8192 pixels are processed (crop first, then one resize);
    8K UHD mono8 (33 MB) fits the shipped Fast DDS profile's shared-memory segment. The
    overlay is bounded (overlay_max_width 1920): it used to be published at full size."""
    harness.subscribe_overlay()
    frame = np.zeros((4320, 7680), np.uint8)
    frame[200:450, :640] = camera_frame(15)[200:450]
    message = raw(frame)
    assert harness.send(message, timeout=30.0) is not None
    stamp = message.header.stamp.sec
    assert harness.spin_until(lambda: stamp in harness.overlays, 10.0)
    overlay = harness.overlays[stamp]
    assert (overlay.width, overlay.height) == (1920, 1080)
    assert harness.send(raw(camera_frame(16))) is not None


# --- hostile input over DDS ------------------------------------------------------------------

def compressed(data: bytes) -> CompressedImage:
    return CompressedImage(format='jpeg', data=data)


def test_bombs_and_cut_jpegs_are_dropped_and_counted(harness) -> None:
    """A 531-byte JPEG declaring 32767x32767 got the node OOM-killed; a cut JPEG ended with
    ffd9 was processed from grey fill."""
    assert harness.set_parameter('input_transport', 'compressed') == (True, '')
    try:
        good = compressed(jpeg(camera_frame(17)))
        cut = jpeg(camera_frame(18))
        for data in (*(bomb for bomb, _ in BOMBS.values()), cut[:len(cut) // 2] + b'\xff\xd9'):
            drop_then_recover(harness, compressed(data), good)
    finally:
        assert harness.set_parameter('input_transport', 'raw') == (True, '')


def test_float_frames_out_of_range_are_not_processed(harness) -> None:
    frame = np.full((480, 640), 0.5, np.float32)
    frame[300, 300] = -4.4e32
    bad = Image(encoding='32FC1', height=480, width=640, step=2560, data=frame.tobytes())
    drop_then_recover(harness, bad, raw(camera_frame(19)))


@pytest.mark.parametrize('stamp, problem', [((0, 0), 'zero'), ((-20, 0), 'negative'),
                                            ((2_000_000_000, 0), 'future'),
                                            ((0, 1), 'before the clock')])
def test_unusable_stamps_are_flagged_and_kept_out_of_latency(harness, stamp: tuple,
                                                             problem: str) -> None:
    """Far-future, zero and negative stamps went into the latency figures (p99 2.2e12 ms)
    and past max_age_ms."""
    message = raw(camera_frame(20))
    assert harness.settle()  # what earlier frames published has arrived
    before, latencies = harness.counter('frames with unusable stamps'), len(harness.latencies)
    masks = len(harness.masks)
    message.header.stamp.sec, message.header.stamp.nanosec = stamp
    assert harness.wait_counter('frames with unusable stamps', before, message)
    assert harness.settle()
    assert len(harness.latencies) == latencies  # no pipeline latency for them...
    assert len(harness.masks) > masks or stamp[0] in harness.masks  # ...but processed
    assert harness.set_parameter('max_age_ms', 500.0) == (True, '')
    try:
        stale = harness.counter('dropped (stale)')
        assert harness.wait_counter('dropped (stale)', stale, message)
    finally:
        assert harness.set_parameter('max_age_ms', 0.0) == (True, '')


def alias_bomb(levels: int) -> str:
    """YAML of about 600 bytes whose nested aliases expand to 10**levels strings."""
    lines = ['a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    lines += [f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * 10)}]' for i in range(1, levels)]
    return '{input.color: {' + ', '.join(lines) + '}}'


def hostile_card(kind: str, tmp_path: Path) -> tuple[str, str, str]:
    """(parameter, value, what its refusal says) for a hostile card."""
    if kind == 'fifo':
        os.mkfifo(tmp_path / 'card.yaml')
        return 'model_card', str(tmp_path / 'card.yaml'), 'not a regular file'
    if kind == 'device':
        return 'model_card', '/dev/zero', 'not a regular file'
    if kind == 'huge':
        (tmp_path / 'huge.yaml').write_text('description: ' + 'x' * 300_000)
        return 'model_card', str(tmp_path / 'huge.yaml'), 'a model card is at most'
    if kind == 'sparse onnx':
        with (tmp_path / 'huge.onnx').open('wb') as stream:
            stream.truncate(5 * 2**30)
        return 'model', str(tmp_path / 'huge.onnx'), 'is at most 2048 MB (max_model_mb)'
    return 'card_overrides', alias_bomb(10), 'aliases are not allowed'


@pytest.mark.parametrize('kind', ['fifo', 'device', 'huge', 'alias bomb', 'sparse onnx'])
def test_hostile_cards_are_refused_at_once_while_frames_go_on(
        harness, tmp_path: Path, kind: str) -> None:
    """A FIFO as model_card held every parameter service and survived SIGINT, /dev/zero was
    read until the OOM killer came, a 600-byte alias bomb in card_overrides stopped the
    frames for 60 s before the node was OOM-killed, and so did a 5 GB sparse ONNX file."""
    name, value, refusal = hostile_card(kind, tmp_path)
    before = harness.get_parameter(name)
    started = time.monotonic()
    successful, reason = harness.set_parameter(name, value)
    assert not successful and refusal in reason, reason
    assert time.monotonic() - started < 10.0 and len(reason) < 1000
    assert harness.get_parameter(name) == before
    assert harness.send(raw(camera_frame(22))) is not None


def test_a_fifo_model_is_refused_at_once(harness, tmp_path: Path) -> None:
    """A FIFO given as model blocked the executor (services, diagnostics) for 12 s."""
    fifo = tmp_path / 'fifo.safetensors'
    os.mkfifo(fifo)
    successful, reason = harness.set_parameter('model', str(fifo))
    assert not successful and 'not a regular file' in reason
    assert harness.send(raw(camera_frame(21))) is not None


def test_a_huge_crop_is_refused(harness, tmp_path: Path) -> None:
    """A checkpoint that validated with a huge crop killed the worker (MemoryError)."""
    path = tmp_path / 'huge.safetensors'
    save_checkpoint(path, authors_net().eval(),
                    ModelSpec('authors', 1, 125, 640, crop=(0, 0, 20000, 20000)))
    successful, reason = harness.set_parameter('model', str(path))
    assert not successful and 'pixel limit' in reason
    assert harness.send(raw(camera_frame(22))) is not None


def test_a_model_deleted_after_acceptance_keeps_running(harness, checkpoint,
                                                        tmp_path: Path) -> None:
    """A model deleted after its check used to leave the parameter and /diagnostics naming a
    model that was not running. Now a model is loaded and its engine built before the change
    is accepted, so a later deletion changes nothing: the parameter, /diagnostics and the
    engine agree."""
    doomed = tmp_path / 'doomed.safetensors'
    doomed.write_bytes(Path(checkpoint).read_bytes())
    assert harness.get_parameter('model') == str(checkpoint)
    assert harness.set_parameter('model', str(doomed)) == (True, '')
    try:
        doomed.unlink()
        assert harness.send(raw(camera_frame(23)), timeout=20.0) is not None
        assert harness.get_parameter('model') == str(doomed)
        assert harness.spin_until(
            lambda: harness.latest_diagnostics().get('model') == str(doomed), 5.0)
    finally:
        assert harness.set_parameter('model', str(checkpoint)) == (True, '')
    assert harness.spin_until(
        lambda: harness.latest_diagnostics().get('model') == str(checkpoint), 5.0)


def test_outputs_beyond_range_are_not_published(harness, checkpoint, camera_spec,
                                                tmp_path: Path) -> None:
    """Frames the network answered with NaN, -4.4e32 or -400 rad went out as steering
    angles."""
    wild = tmp_path / 'wild.safetensors'
    network = authors_net().eval()
    with torch.no_grad():
        network.head[-1].bias.fill_(400.0)  # every answer: about 400 rad
    save_checkpoint(wild, network, camera_spec)
    assert harness.set_parameter('model', str(wild)) == (True, '')
    try:
        before = harness.counter('dropped (unpublishable output)')
        angles = len(harness.angles)
        assert harness.wait_counter('dropped (unpublishable output)', before,
                                    raw(camera_frame(24)), timeout=30.0)
        assert all(abs(angle) < 4 for angle in harness.angles[angles:])
    finally:
        assert harness.set_parameter('model', str(checkpoint)) == (True, '')


def test_the_overlay_width_is_a_parameter(harness) -> None:
    harness.subscribe_overlay()
    assert harness.set_parameter('overlay_max_width', 320) == (True, '')
    try:
        message = raw(camera_frame(25))
        harness.send(message)
        stamp = message.header.stamp.sec
        assert harness.spin_until(lambda: stamp in harness.overlays, 10.0)
        assert (harness.overlays[stamp].width, harness.overlays[stamp].height) == (320, 240)
    finally:
        assert harness.set_parameter('overlay_max_width', 1920) == (True, '')


@pytest.mark.parametrize('parameters, problem', [
    (['-p', 'input_qos:=fastest'], 'input_qos must be one of'),
    (['-p', 'mask_encoding:=rgb8'], 'mask_encoding must be one of'),
    (['-p', 'deadline_ms:=-5.0'], 'deadline_ms'),
    (['-p', 'device:=tpu'], 'device'),
    (['-p', 'model:=/nonexistent/model.safetensors'], 'no such model file'),
    (['-p', 'model:={fifo}'], 'not a regular file'),
])
def test_bad_start_up_values_end_in_one_line_and_exit_1(ros, checkpoint, tmp_path: Path,
                                                        parameters: list, problem: str) -> None:
    """Choice parameters were accepted at start-up, and bad values ended in a double traceback
    ('VBPNode' object has no attribute ... from destroy_node)."""
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    arguments = [part.format(fifo=fifo) for part in parameters]
    process = start_node(*arguments, '-r', '__ns:=/start_up_test')
    output, _ = process.communicate(timeout=60)
    lines = [line for line in output.splitlines() if line.strip()]
    assert process.returncode == 1, output
    assert len(lines) == 1 and problem in lines[0] and 'Traceback' not in output, output
