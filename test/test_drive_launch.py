"""launch/drive.launch.py starts what its arguments say, names what setup.py installs and agrees
with config/ (vbp.rviz included); vbp_ros.drive.plan, its plain Python, is tested here too.

launch and launch_ros are not installable here: the launch file runs against stand-in modules
whose classes keep their constructor arguments, and a small evaluator plays the part of the
substitutions, conditions, namespaces and remappings it uses.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import setuptools
import yaml
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from launch_source import keyword, launch_calls
from vbp_ros import interface
from vbp_ros.drive import plan
from vbp_ros.ros.outputs import OUTPUT_QOS

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIG = REPOSITORY / 'config'
LAUNCH_FILE = REPOSITORY / 'launch' / 'drive.launch.py'
BOOLEAN = ['true', 'false']
STAND_INS = {
    'launch': ('Action', 'LaunchContext', 'LaunchDescription'),
    'launch.actions': ('DeclareLaunchArgument', 'ExecuteProcess', 'GroupAction', 'OpaqueFunction',
                       'SetEnvironmentVariable', 'Shutdown'),
    'launch.conditions': ('IfCondition', 'UnlessCondition'),
    'launch.substitutions': ('EqualsSubstitution', 'LaunchConfiguration', 'PathJoinSubstitution'),
    'launch_ros.actions': ('Node', 'PushRosNamespace'),
    'launch_ros.parameter_descriptions': ('ParameterValue',),
    'launch_ros.substitutions': ('FindPackageShare',),
}


class Recorded:
    """A stand-in launch class: keeps the arguments it was built with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def kind(value: object) -> str:
    """The launch class a stand-in object stands for."""
    return type(value).__name__


def recorded_in(value: object) -> Iterator[Recorded]:
    """Every stand-in object in ``value``, however deep in arguments, lists and dicts."""
    if isinstance(value, Recorded):
        yield value
        yield from recorded_in([*value.args, *value.kwargs.values()])
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from recorded_in(item)
    elif isinstance(value, dict):
        yield from recorded_in(list(value.values()))


# What each substitution performs to; the package share is the repository, whose config/ and
# launch/ setup.py installs there (checked below).
SUBSTITUTIONS: dict[str, Callable[[Recorded, dict], str]] = {
    'LaunchConfiguration': lambda s, configs: configs[s.args[0]],
    'FindPackageShare': lambda s, configs: str(REPOSITORY) if s.args == ('vbp_ros',) else '',
    'PathJoinSubstitution': lambda s, configs: str(Path(*(evaluate(p, configs)
                                                          for p in s.args[0]))),
    'ParameterValue': lambda s, configs: evaluate(s.args[0], configs),
    'EqualsSubstitution': lambda s, configs: str(evaluate(s.args[0], configs)
                                                 == evaluate(s.args[1], configs)).lower(),
}


def evaluate(value: Any, configs: dict[str, str]) -> Any:
    """What a substitution, or a list of them, performs to; other values stay (a list of
    plain strings too, as launch_ros keeps a string-array parameter)."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, list):
        return ''.join(evaluate(item, configs) for item in value)
    return SUBSTITUTIONS[kind(value)](value, configs) if isinstance(value, Recorded) else value


def runs(entity: Recorded, configs: dict[str, str]) -> bool:
    """Whether the condition of ``entity``, if any, lets it run (as launch's conditions do)."""
    condition = entity.kwargs.get('condition')
    if condition is None:
        return True
    truth = {'true': True, '1': True, 'false': False, '0': False}[
        evaluate(condition.args[0], configs).lower()]
    return truth if kind(condition) == 'IfCondition' else not truth


def started(entities: list[Recorded], configs: dict[str, str],
            namespace: str = '') -> Iterator[tuple[Recorded, str]]:
    """The actions launch runs under ``configs`` and the ROS namespace each runs in: groups
    entered, pushed namespaces applied, opaque functions called with a stand-in context."""
    for entity in entities:
        if not runs(entity, configs):
            continue
        if kind(entity) == 'PushRosNamespace':
            namespace = evaluate(entity.args[0], configs)
        elif kind(entity) == 'GroupAction':
            yield from started(entity.args[0], configs, namespace)
        elif kind(entity) == 'OpaqueFunction':
            context = types.SimpleNamespace(launch_configurations=dict(configs))
            yield from started(entity.kwargs['function'](context), configs, namespace)
        else:
            yield entity, namespace


def arguments(description: Recorded) -> dict[str, Recorded]:
    """The declared launch arguments by name."""
    return {entity.args[0]: entity for entity in description.args[0]
            if kind(entity) == 'DeclareLaunchArgument'}


def launch_configurations(description: Recorded, **overrides: str) -> dict[str, str]:
    """The launch configurations of ``ros2 launch ... name:=value`` for ``overrides``."""
    configs: dict[str, str] = {}
    for name, argument in arguments(description).items():
        configs[name] = overrides.pop(name) if name in overrides else evaluate(
            argument.kwargs['default_value'], configs)
        assert configs[name] in argument.kwargs.get('choices', [configs[name]]), name
    assert not overrides, f'not declared: {overrides}'
    return configs


class Drive:
    """What ``ros2 launch vbp_ros drive.launch.py`` starts for some arguments."""

    def __init__(self, description: Recorded, **overrides: str) -> None:
        self.configs = launch_configurations(description, **overrides)
        self.actions = list(started(description.args[0], self.configs))

    def nodes(self) -> dict[str, tuple[Recorded, str]]:
        """The started nodes by executable, with their namespaces."""
        return {node.kwargs['executable']: (node, namespace) for node, namespace in self.actions
                if kind(node) == 'Node'}

    def processes(self) -> list[Recorded]:
        """The started ExecuteProcess actions."""
        return [action for action, _ in self.actions if kind(action) == 'ExecuteProcess']

    def topic(self, executable: str, name: str) -> str:
        """Where that node resolves topic ``name``: the first matching remapping applies and
        relative names expand in the node's namespace, as in rcl."""
        node, namespace = self.nodes()[executable]
        resolved = interface.resolve_topic(name, namespace)
        for source, target in node.kwargs.get('remappings', []):
            if interface.resolve_topic(evaluate(source, self.configs), namespace) == resolved:
                return interface.resolve_topic(evaluate(target, self.configs), namespace)
        return resolved

    def parameters(self, executable: str) -> list[Any]:
        """That node's parameters: file paths and dicts, performed."""
        node, _ = self.nodes()[executable]
        return [{key: evaluate(value, self.configs) for key, value in entry.items()}
                if isinstance(entry, dict) else evaluate(entry, self.configs)
                for entry in node.kwargs['parameters']]


@pytest.fixture
def description(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """generate_launch_description() of drive.launch.py, built from stand-in launch classes."""
    for module_name, class_names in STAND_INS.items():
        module = types.ModuleType(module_name)
        for name in class_names:
            setattr(module, name, type(name, (Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    spec = importlib.util.spec_from_file_location('drive_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


@pytest.fixture(scope='module')
def setup_arguments() -> dict[str, Any]:
    """The keyword arguments setup.py passes to setuptools.setup."""
    captured: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
        patch.chdir(REPOSITORY)
        runpy.run_path('setup.py')
    return captured


def installed(setup_arguments: dict[str, Any], folder: str) -> set[str]:
    """Names of the files setup.py installs into share/vbp_ros/<folder>."""
    return {Path(path).name for target, paths in setup_arguments['data_files']
            if target == f'share/vbp_ros/{folder}' for path in paths}


def parameters_of(path: Path, node_name: str) -> dict[str, Any]:
    """The ros__parameters of the one node a package parameter file configures."""
    (key, section), = yaml.safe_load(path.read_text()).items()
    assert key == f'/**/{node_name}'
    return section['ros__parameters']


def rviz_images() -> dict[str, dict]:
    """The Image displays of config/vbp.rviz by name."""
    document = yaml.safe_load((CONFIG / interface.RVIZ_CONFIG).read_text())
    displays = document['Visualization Manager']['Displays']
    return {display['Name']: display for display in displays
            if display['Class'] == 'rviz_default_plugins/Image'}


# --- the launch file, read and run -----------------------------------------------------------

def test_launch_file_compiles_and_names_console_scripts(setup_arguments: dict) -> None:
    compile(LAUNCH_FILE.read_text(encoding='utf-8'), str(LAUNCH_FILE), 'exec')
    scripts = {line.split('=')[0].strip()
               for line in setup_arguments['entry_points']['console_scripts']}
    nodes = launch_calls(LAUNCH_FILE)['Node']
    assert {keyword(node, 'package') for node in nodes} == {'vbp_ros', 'rviz2'}
    executables = {keyword(node, 'executable') for node in nodes
                   if keyword(node, 'package') == 'vbp_ros'}
    assert executables == {'road_camera', 'vbp_node', 'vbp_record'}
    assert executables <= scripts, executables - scripts
    assert LAUNCH_FILE.name in installed(setup_arguments, 'launch')


def test_launch_arguments_defaults_choices_and_descriptions(description: Recorded) -> None:
    declared = arguments(description)
    config_file = {'params_file': 'vbp.yaml', 'camera_params_file': 'road_camera.yaml',
                   'record_params_file': 'record.yaml'}
    defaults = {'source': 'synthetic', 'path': '', 'image_topic': 'camera/image_raw',
                'model': '', 'device': 'auto', 'record': 'false', 'record_overlay': 'false',
                'bag_dir': '',
                'recorder': 'auto', 'rviz': 'false', 'namespace': '', 'use_sim_time': 'false',
                'respawn': 'false', 'managed': 'false', 'foxglove_port': '0',
                **{name: str(CONFIG / file) for name, file in config_file.items()}}
    choices = {'source': ['synthetic', 'video', 'images', 'topic'], 'record': BOOLEAN,
               'record_overlay': BOOLEAN, 'rviz': BOOLEAN, 'use_sim_time': BOOLEAN,
               'respawn': BOOLEAN, 'managed': BOOLEAN,
               'recorder': ['auto', 'rosbag2', 'vbp_record']}
    assert set(declared) == set(defaults)
    for name, argument in declared.items():
        assert evaluate(argument.kwargs['default_value'], {}) == defaults[name], name
        assert argument.kwargs.get('choices') == choices.get(name), name
        assert len(argument.kwargs['description']) > 10, name


def test_defaults_agree_with_config() -> None:
    camera = parameters_of(CONFIG / interface.CAMERA_PARAMS, 'road_camera')
    vbp = parameters_of(CONFIG / interface.VBP_PARAMS, 'vbp')
    assert ('synthetic', '') == (camera['source'], camera['path'])
    assert ('', 'auto') == (vbp['model'], vbp['device'])
    assert '' == parameters_of(CONFIG / interface.RECORD_PARAMS, 'vbp_record')['bag_dir']
    assert rviz_images()['Camera']['Topic']['Value'] == \
        interface.resolve_topic(interface.DEFAULT_CAMERA_TOPIC, '') == '/camera/image_raw'
    assert interface.DEFAULT_CAMERA_TOPIC == 'camera/image_raw'  # relative: namespaces move it


def test_config_files_it_names_exist_and_are_installed(description: Recorded,
                                                       setup_arguments: dict) -> None:
    configs = launch_configurations(description)
    named = {Path(evaluate(join, configs)) for join in recorded_in(description)
             if kind(join) == 'PathJoinSubstitution'}
    assert named == {CONFIG / name for name in (
        'vbp.yaml', 'road_camera.yaml', 'record.yaml', 'fastdds.xml', 'vbp.rviz')}
    assert all(path.is_file() for path in named)
    missing = {path.name for path in named} - installed(setup_arguments, 'config')
    assert not missing, f'setup.py does not install {missing}'


def test_default_drive_is_camera_into_vbp_node(description: Recorded) -> None:
    drive = Drive(description)
    nodes = drive.nodes()
    assert set(nodes) == {'road_camera', 'vbp_node'} and not drive.processes()
    assert {node.kwargs['name'] for node, _ in nodes.values()} == {'road_camera', 'vbp'}
    assert {namespace for _, namespace in nodes.values()} == {''}
    assert drive.topic('road_camera', 'image') == drive.topic('vbp_node', 'image') \
        == '/camera/image_raw'
    assert drive.topic('vbp_node', 'image/compressed') == '/camera/image_raw/compressed'
    assert drive.parameters('vbp_node') == [
        str(CONFIG / 'vbp.yaml'),
        {'model': '', 'device': 'auto', 'foxglove_port': '0', 'use_sim_time': 'false'}]
    environment = next(a for a in description.args[0] if kind(a) == 'SetEnvironmentVariable')
    assert environment.args[0] == 'FASTDDS_DEFAULT_PROFILES_FILE'
    assert evaluate(environment.args[1], drive.configs) == str(CONFIG / 'fastdds.xml')


def test_camera_source_and_path_reach_road_camera(description: Recorded) -> None:
    drive = Drive(description, source='video', path='/data/drive.mp4', use_sim_time='true',
                  camera_params_file='/tmp/camera.yaml')
    assert drive.parameters('road_camera') == ['/tmp/camera.yaml', {
        'source': 'video', 'path': '/data/drive.mp4', 'wait_for_subscribers': 1,
        'use_sim_time': 'true'}]


def test_source_topic_starts_no_road_camera(description: Recorded) -> None:
    drive = Drive(description, source='topic', image_topic='/front/image_raw')
    assert set(drive.nodes()) == {'vbp_node'}
    assert drive.topic('vbp_node', 'image') == '/front/image_raw'


def test_namespace_moves_nodes_and_rviz_follows(description: Recorded,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, 'rviz2_available', lambda: True)
    drive = Drive(description, namespace='car1', image_topic='front/image', rviz='true',
                  use_sim_time='true')
    nodes = drive.nodes()
    assert set(nodes) == {'road_camera', 'vbp_node', 'rviz2'}
    assert {namespace for _, namespace in nodes.values()} == {'car1'}
    rviz, _ = nodes['rviz2']
    assert rviz.kwargs['package'] == 'rviz2'
    assert [evaluate(a, drive.configs) for a in rviz.kwargs['arguments']] == [
        '-d', str(CONFIG / 'vbp.rviz')]
    shown = {name: drive.topic('rviz2', display['Topic']['Value'])
             for name, display in rviz_images().items()}
    assert shown == {'Camera': drive.topic('vbp_node', 'image'),
                     'VBP overlay': drive.topic('vbp_node', 'vbp/overlay'),
                     'VBP mask': drive.topic('vbp_node', 'vbp/mask')}
    assert shown['Camera'] == drive.topic('road_camera', 'image') == '/car1/front/image'
    assert shown['VBP mask'] == '/car1/vbp/mask'
    for executable in nodes:
        assert yaml.safe_load(drive.parameters(executable)[-1]['use_sim_time']) is True


@pytest.mark.parametrize('recorder, rosbag2, expected', [
    ('auto', True, 'rosbag2'), ('auto', False, 'vbp_record'),
    ('rosbag2', True, 'rosbag2'), ('vbp_record', True, 'vbp_record')])
def test_recorder_is_chosen_at_run_time(description: Recorded, monkeypatch: pytest.MonkeyPatch,
                                        recorder: str, rosbag2: bool, expected: str) -> None:
    monkeypatch.setattr(plan, 'rosbag2_available', lambda: rosbag2)
    drive = Drive(description, record='true', recorder=recorder, namespace='car1')
    assert ('vbp_record' in drive.nodes()) == (expected == 'vbp_record')
    assert len(drive.processes()) == (expected == 'rosbag2')


def test_ros2_bag_record_gets_the_namespaced_topics(description: Recorded,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, 'rosbag2_available', lambda: True)
    drive = Drive(description, record='true', recorder='rosbag2', namespace='car1',
                  bag_dir='/data/bags/run1', use_sim_time='true')
    (process,) = drive.processes()
    topics = parameters_of(CONFIG / 'record.yaml', 'vbp_record')['topics']
    assert process.kwargs['cmd'] == [
        'ros2', 'bag', 'record', '-s', 'mcap', '--storage-preset-profile', 'zstd_fast',
        '-o', '/data/bags/run1', '--use-sim-time',
        *(topic if topic.startswith('/') else f'/car1/{topic}' for topic in topics)]
    assert '/car1/camera/image_raw' in process.kwargs['cmd']
    assert '/car1/vbp/overlay' not in process.kwargs['cmd']
    (process,) = Drive(description, record='true', recorder='rosbag2', namespace='car1',
                       record_overlay='true').processes()
    assert process.kwargs['cmd'][-1] == '/car1/vbp/overlay'


def test_vbp_record_runs_in_the_namespace_with_the_record_file(
        description: Recorded, tmp_path: Path) -> None:
    own_file = tmp_path / 'record.yaml'
    own_file.write_text('/**/vbp_record:\n  ros__parameters:\n    bag_dir: /data/bags/mine\n')
    drive = Drive(description, record='true', recorder='vbp_record', namespace='car1',
                  record_params_file=str(own_file))
    node, namespace = drive.nodes()['vbp_record']
    assert (node.kwargs['package'], node.kwargs['name'], namespace) == (
        'vbp_ros', 'vbp_record', 'car1')
    assert drive.parameters('vbp_record') == [str(own_file), {
        'bag_dir': '/data/bags/mine', 'topics': list(interface.RECORDED_TOPICS),
        'use_sim_time': False}]  # the file names no topics: the recorder's default


@pytest.mark.parametrize('arguments, topics, waits', [
    ({}, None, 1),  # vbp_node
    ({'rviz': 'true'}, None, 2),  # and rviz2, which would otherwise stand in for vbp_node
    ({'record': 'true', 'image_topic': 'front/image'},
     ['front/image', 'steering_angle', 'outputs', 'vbp/mask', 'vbp/mask_roi',
      'vbp/attention', 'debug/processing_time_ms', 'debug/pipeline_latency_ms',
      '/diagnostics'], 2),
    ({'record': 'true', 'record_overlay': 'true', 'rviz': 'true'},
     ['camera/image_raw', 'steering_angle', 'outputs', 'vbp/mask', 'vbp/mask_roi',
      'vbp/attention', 'debug/processing_time_ms', 'debug/pipeline_latency_ms',
      '/diagnostics', 'vbp/overlay'],
     3)])
def test_a_recording_keeps_the_camera_and_frame_one(
        description: Recorded, monkeypatch: pytest.MonkeyPatch, arguments: dict,
        topics: list[str] | None, waits: int) -> None:
    """The recorder records the camera (the drive's image_topic) and the masks, not the
    overlays unless asked; road_camera's first frame waits until it listens to the camera and
    to vbp_node's outputs (but the latched vbp/mask_roi)."""
    monkeypatch.setattr(plan, 'rviz2_available', lambda: True)
    drive = Drive(description, recorder='vbp_record', namespace='car1', **arguments)
    camera = drive.parameters('road_camera')[1]
    assert camera['wait_for_subscribers'] == waits
    if topics is None:
        assert 'vbp_record' not in drive.nodes() and 'wait_for_topics' not in camera
        return
    assert drive.parameters('vbp_record')[1]['topics'] == topics
    assert drive.topic('road_camera', 'image') == interface.resolve_topic(topics[0], 'car1')
    overlay = ['/car1/vbp/overlay'] if 'vbp/overlay' in topics else []
    assert camera['wait_for_topics'] == [
        '/car1/steering_angle', '/car1/outputs', '/car1/vbp/mask', '/car1/vbp/attention',
        *overlay, '/car1/debug/processing_time_ms', '/car1/debug/pipeline_latency_ms']


def test_a_record_file_without_the_camera_leaves_frame_one_to_vbp_node(
        description: Recorded, tmp_path: Path) -> None:
    own_file = tmp_path / 'record.yaml'
    own_file.write_text('/**/vbp_record:\n  ros__parameters:\n    topics: [vbp/overlay]\n')
    drive = Drive(description, record='true', recorder='vbp_record',
                  record_params_file=str(own_file))
    assert drive.parameters('road_camera')[1]['wait_for_subscribers'] == 1
    assert drive.parameters('road_camera')[1]['wait_for_topics'] == ['/vbp/overlay']
    assert drive.parameters('vbp_record')[1]['topics'] == ['vbp/overlay']


@pytest.mark.parametrize('arguments, missing', [
    ({'rviz': 'true'}, 'rviz:=true needs rviz2'),
    ({'record': 'true', 'recorder': 'rosbag2'}, 'recorder:=rosbag2 needs ros2bag'),
    ({'rviz': 'true', 'record': 'true', 'recorder': 'rosbag2'}, 'rviz2, which.*; recorder')])
def test_missing_optional_pieces_stop_the_launch_before_anything_starts(
        description: Recorded, monkeypatch: pytest.MonkeyPatch, arguments: dict,
        missing: str) -> None:
    """rviz:=true without rviz2 used to exit 1 with road_camera and vbp_node left running."""
    monkeypatch.setattr(plan, 'rviz2_available', lambda: False)
    monkeypatch.setattr(plan, 'rosbag2_available', lambda: False)
    first = description.args[0].index(next(
        entity for entity in description.args[0] if kind(entity) == 'OpaqueFunction'))
    assert all(kind(entity) == 'DeclareLaunchArgument' for entity in description.args[0][:first])
    with pytest.raises(RuntimeError, match=missing):
        Drive(description, **arguments)


def test_namespaces_isolate_whole_drives(description: Recorded) -> None:
    """With namespace:=car1 the camera topic was absolute: two drives fed each other."""
    topics = {}
    for car in ('car1', 'car2'):
        drive = Drive(description, namespace=car, record='true', recorder='vbp_record')
        camera = drive.topic('road_camera', 'image')
        assert camera == drive.topic('vbp_node', 'image') == f'/{car}/camera/image_raw'
        topics[car] = {camera, drive.topic('vbp_node', 'vbp/overlay')}
    assert not topics['car1'] & topics['car2']


def exit_handler(description: Recorded, executable: str) -> Callable:
    drive = Drive(description, record='true', recorder='vbp_record')
    node, _ = drive.nodes()[executable]
    return node.kwargs['on_exit']


@pytest.mark.parametrize('executable', ['road_camera', 'vbp_node', 'vbp_record'])
def test_a_process_that_exits_stops_the_drive_with_an_error(
        description: Recorded, executable: str) -> None:
    """vbp_node dying (device:=cuda without CUDA) used to leave the launch running."""
    handler = exit_handler(description, executable)
    event = types.SimpleNamespace(action=types.SimpleNamespace(name=f'{executable}-2'),
                                  returncode=1)
    running = types.SimpleNamespace(is_shutdown=False,
                                    launch_configurations={'respawn': 'false'})
    with pytest.raises(RuntimeError, match=f'{executable}-2 exited with code 1'):
        handler(event, running)
    stopping = types.SimpleNamespace(is_shutdown=True, launch_configurations={})
    assert handler(event, stopping) is None  # Ctrl-C: every process exits, nothing to say
    # A terminal's Ctrl-C reaches every process directly, often before launch sees it: a
    # process that exits 0 ends the drive cleanly instead of failing it.
    finished = types.SimpleNamespace(action=event.action, returncode=0)
    (shutdown,) = handler(finished, running)
    assert kind(shutdown) == 'Shutdown' and executable in shutdown.kwargs['reason']
    respawning = types.SimpleNamespace(is_shutdown=False,
                                       launch_configurations={'respawn': 'true'})
    if executable == 'vbp_node':
        assert handler(event, respawning) is None
        node, _ = Drive(description, respawn='true').nodes()['vbp_node']
        assert evaluate(node.kwargs['respawn'], {'respawn': 'true'}) == 'true'
    else:
        with pytest.raises(RuntimeError):
            handler(event, respawning)


def test_recorder_gets_time_to_close_the_bag(description: Recorded) -> None:
    node, _ = Drive(description, record='true', recorder='vbp_record').nodes()['vbp_record']
    assert float(node.kwargs['sigkill_timeout']) == plan.STOP_TIMEOUT_S['vbp_record'] >= 60


def test_no_recorder_or_rviz_unless_asked(description: Recorded) -> None:
    drive = Drive(description, recorder='rosbag2', bag_dir='/data/bags/run1')
    assert set(drive.nodes()) == {'road_camera', 'vbp_node'} and not drive.processes()


# --- config/vbp.rviz --------------------------------------------------------------------------

RVIZ_POLICIES = {
    'Reliability Policy': ('reliability', {'Reliable': ReliabilityPolicy.RELIABLE,
                                           'Best Effort': ReliabilityPolicy.BEST_EFFORT}),
    'Durability Policy': ('durability', {'Volatile': DurabilityPolicy.VOLATILE,
                                         'Transient Local': DurabilityPolicy.TRANSIENT_LOCAL}),
    'History Policy': ('history', {'Keep Last': HistoryPolicy.KEEP_LAST,
                                   'Keep All': HistoryPolicy.KEEP_ALL}),
}


def test_rviz_config_is_an_rviz2_document() -> None:
    document = yaml.safe_load((CONFIG / interface.RVIZ_CONFIG).read_text())
    assert {'Panels', 'Visualization Manager', 'Window Geometry'} <= set(document)
    manager = document['Visualization Manager']
    assert manager['Class'] == '' and {'Displays', 'Tools', 'Views'} <= set(manager)
    frame_id = parameters_of(CONFIG / interface.CAMERA_PARAMS, 'road_camera')['frame_id']
    assert manager['Global Options']['Fixed Frame'] == frame_id == 'camera'


def test_rviz_shows_the_node_topics() -> None:
    images = rviz_images()
    assert {name: image['Topic']['Value'] for name, image in images.items()} == {
        'Camera': interface.resolve_topic(interface.DEFAULT_CAMERA_TOPIC, ''),
        'VBP overlay': interface.resolve_topic('vbp/overlay', ''),
        'VBP mask': interface.resolve_topic('vbp/mask', '')}
    assert all(image['Enabled'] for image in images.values())


@pytest.mark.parametrize('name, publisher', [
    ('Camera', qos_profile_sensor_data), ('VBP overlay', OUTPUT_QOS), ('VBP mask', OUTPUT_QOS)])
def test_rviz_subscriptions_match_the_publishers_qos(name: str, publisher: QoSProfile) -> None:
    topic = rviz_images()[name]['Topic']
    assert set(topic) == {'Value', 'Depth', 'Filter size', *RVIZ_POLICIES}
    for key, (attribute, values) in RVIZ_POLICIES.items():
        assert values[topic[key]] == getattr(publisher, attribute), key
    assert topic['Depth'] == publisher.depth


# --- plan -----------------------------------------------------------------------------------

def test_node_parameters_reads_every_key_form_in_order(tmp_path: Path) -> None:
    path = tmp_path / 'params.yaml'
    path.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'rate': 1.0, 'seed': 1}},
        '/**/road_camera': {'ros__parameters': {'rate': 2.0}},
        'road_camera': {'ros__parameters': {'loop': False}},
        '/**/vbp': {'ros__parameters': {'rate': 9.0}},
        '/road_camera': {'ros__parameters': {'seed': 3}}}))
    assert plan.node_parameters(path, 'road_camera') == {
        'rate': 2.0, 'seed': 3, 'loop': False}
    assert plan.node_parameters(path, 'vbp_record') == {'rate': 1.0, 'seed': 1}


def test_record_topics_and_bag_dir_come_from_the_record_file(tmp_path: Path) -> None:
    path = CONFIG / interface.RECORD_PARAMS
    assert plan.record_topics(path) == parameters_of(path, 'vbp_record')['topics']
    assert plan.record_bag_dir(path, '') == ''
    assert plan.record_bag_dir(path, '/data/run1') == '/data/run1'
    own = tmp_path / 'record.yaml'
    own.write_text('/**/vbp_record:\n  ros__parameters:\n    bag_dir: /data/mine\n')
    assert plan.record_bag_dir(own, '') == '/data/mine'
    assert plan.record_bag_dir(own, '/data/run1') == '/data/run1'


@pytest.mark.parametrize('topic, namespace, resolved', [
    ('vbp/mask', '', '/vbp/mask'), ('vbp/mask', 'car1', '/car1/vbp/mask'),
    ('vbp/mask', '/car1/', '/car1/vbp/mask'), ('/diagnostics', 'car1', '/diagnostics')])
def test_resolve_topic(topic: str, namespace: str, resolved: str) -> None:
    assert interface.resolve_topic(topic, namespace) == resolved


def test_ros2_bag_record_command(tmp_path: Path) -> None:
    params_file = tmp_path / 'record.yaml'
    params_file.write_text('/**/vbp_record:\n  ros__parameters:\n'
                           '    topics: [steering_angle, /diagnostics]\n')
    topics = plan.record_topics(params_file)
    assert plan.ros2_bag_record_command(params_file, topics, '', '') == [
        'ros2', 'bag', 'record', '-s', 'mcap', '/steering_angle', '/diagnostics']
    assert plan.ros2_bag_record_command(params_file, topics, 'run1', 'car1',
                                        use_sim_time=True) == [
        'ros2', 'bag', 'record', '-s', 'mcap', '-o', 'run1', '--use-sim-time',
        '/car1/steering_angle', '/diagnostics']
    params_file.write_text(params_file.read_text() + '    compression: zstd\n')
    assert plan.ros2_bag_record_command(params_file, topics, '', '')[5:7] == [
        '--storage-preset-profile', 'zstd_fast']


def test_recorded_topics_put_the_drives_camera_in_place_of_the_files(tmp_path: Path) -> None:
    path = CONFIG / interface.RECORD_PARAMS
    assert plan.record_topics(path) == list(interface.RECORDED_TOPICS)
    assert plan.recorded_topics(path, '/front/image_raw') == [
        '/front/image_raw', *interface.RECORDED_TOPICS[1:]]
    assert plan.recorded_topics(path, 'camera/image_raw', record_overlay=True) == [
        *interface.RECORDED_TOPICS, 'vbp/overlay']
    assert plan.records_camera(['camera/image_raw'], '/car1/camera/image_raw', 'car1')
    assert not plan.records_camera(['/camera/image_raw'], 'camera/image_raw', 'car1')
    assert 'vbp/overlay' not in interface.RECORDED_TOPICS


def test_vbp_drive_records_what_launch_records(tmp_path: Path) -> None:
    request = plan.DriveRequest('car1', 'front/image', CONFIG / interface.VBP_PARAMS,
                                CONFIG / interface.CAMERA_PARAMS, CONFIG / interface.RECORD_PARAMS,
                                tmp_path / 'bag', record_overlay=True)
    camera, node, recorder = plan.drive_processes(request, tmp_path)
    assert camera.command[camera.command.index('wait_for_subscribers:=3') - 1] == '-p'
    topics = next(argument for argument in recorder.command if argument.startswith('topics:='))
    assert yaml.safe_load(topics.split(':=', 1)[1]) == request.recorded_topics() == [
        'front/image', *interface.RECORDED_TOPICS[1:], 'vbp/overlay']
    assert not plan.DriveRequest('', 'camera/image_raw', CONFIG / interface.VBP_PARAMS,
                                 CONFIG / interface.CAMERA_PARAMS,
                                 CONFIG / interface.RECORD_PARAMS, None).records_camera()


def test_auto_recorder_is_vbp_record_without_ros2(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv('PATH', str(tmp_path))
    assert not plan.rosbag2_available()
    assert plan.chosen_recorder('auto') == 'vbp_record'
    assert [plan.chosen_recorder(r) for r in ('rosbag2', 'vbp_record')] == [
        'rosbag2', 'vbp_record']
    assert interface.RECORDERS == ('auto', 'rosbag2', 'vbp_record')


def test_rviz_remappings_lead_to_vbp_node_outputs() -> None:
    remappings = plan.rviz_remappings()
    assert remappings == [('/vbp/overlay', 'vbp/overlay'), ('/vbp/mask', 'vbp/mask')]
    assert {source for source, _ in remappings} < {
        image['Topic']['Value'] for image in rviz_images().values()}
