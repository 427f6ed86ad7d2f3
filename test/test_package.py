"""The ament_python package is complete and the layers import only what they may."""

from __future__ import annotations

import ast
import configparser
import importlib
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from functools import partial
from pathlib import Path

import pytest

from launch_source import keyword, launch_calls

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / 'vbp_ros'


def test_package_xml_declares_the_runtime_dependencies() -> None:
    root = ElementTree.parse(REPOSITORY / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'vbp_ros'
    exec_depends = {e.text for e in root.iter('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'launch_ros',
            'python3-numpy'} <= exec_depends
    assert 'python3-pytest' in {e.text for e in root.iter('test_depend')}
    assert root.find('export/build_type').text == 'ament_python'


def test_setup_cfg_puts_executables_where_ros2_run_looks() -> None:
    config = configparser.ConfigParser()
    config.read(REPOSITORY / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/vbp_ros'
    assert config['install']['install_scripts'] == '$base/lib/vbp_ros'
    assert (REPOSITORY / 'resource' / 'vbp_ros').is_file()


def test_console_scripts_point_at_callable_mains() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e for e in entry_points(group='console_scripts')
               if e.value.startswith('vbp_ros.')}
    assert {'vbp-import-t7', 'vbp-figure2', 'vbp-bench', 'vbp-agreement', 'vbp-ingest',
            'vbp-train', 'vbp-eval', 'vbp-latency', 'vbp_node', 'road_camera'} <= set(scripts)
    for script in scripts.values():
        entry = script.load()
        assert script.module == 'vbp_ros.entry_points' and callable(entry)
        # Each names its executable's module, imported only when the script is called.
        module = ('ros.' if entry.func.__name__ == '_ros_executable' else '') + entry.args[-1]
        assert callable(importlib.import_module(f'vbp_ros.{module}').main), script.name


def test_a_ctrl_c_while_a_tool_imports_ends_it_with_one_line(tmp_path: Path) -> None:
    """vbp-fleet imports PyTorch and Ray (seconds): a Ctrl-C then used to print a
    KeyboardInterrupt traceback from inside the import. A stand-in for one of its imports
    (tqdm, first on the path) holds the import until the signal comes, so that the signal comes
    inside it however warm the caches are (a signal sent after a delay missed it on fresh
    clones). The tool starts as from a terminal, with SIGINT at its default: a script's
    background job ignores SIGINT, and Python, and so the tool, keeps it ignored (the test then
    waited 60 s and failed whenever the suite itself ran in such a job)."""
    marker = tmp_path / 'importing'
    (tmp_path / 'tqdm').mkdir()
    (tmp_path / 'tqdm' / '__init__.py').write_text(
        f'import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n')
    path = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get('PYTHONPATH'))))
    tool = subprocess.Popen([str(Path(sys.executable).parent / 'vbp-fleet')],
                            env={**os.environ, 'PYTHONPATH': path},
                            preexec_fn=partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and tool.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), tool.communicate(timeout=60)
    tool.send_signal(signal.SIGINT)
    out, err = tool.communicate(timeout=60)
    assert (tool.returncode, out, err) == (130, '', 'vbp-fleet: interrupted\n')


def test_ros_executables_answer_help_and_start_nothing(tmp_path: Path) -> None:
    """rcl ignores --help: vbp_record --help recorded a bag into the current folder."""
    for name in ('vbp_record', 'road_camera'):
        result = subprocess.run([str(Path(sys.executable).parent / name), '--help'],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f'usage: {name} [--ros-args') and \
            f'\n{name}: ' in result.stdout
    assert not list(tmp_path.iterdir())


def test_ament_index_finds_the_installed_package() -> None:
    from ament_index_python.packages import get_package_share_directory

    if 'AMENT_PREFIX_PATH' not in os.environ:
        pytest.fail('AMENT_PREFIX_PATH is not set: run the tests through the README command')
    share = Path(get_package_share_directory('vbp_ros'))
    assert (share / 'package.xml').is_file()


# What each layer of the package may import from the package (its own layer always), bottom up:
# explain follows any network (nn.Module or ONNX graph) and knows no model file; models reads
# files and cards, and finds an ONNX graph's image input with explain's graph reader; data only
# reads and writes (bags, recordings, datasets); fleet, above engine and data, runs vbp-fleet's
# engines in Ray workers.
LAYERS = {
    'interface': set(),
    'moved': set(),
    'core': set(),  # deprecated: only its package docstring is left (old paths: moved)
    'pixels': set(),
    'explain': {'interface', 'pixels'},
    'models': {'interface', 'pixels', 'explain'},
    'engine': {'interface', 'pixels', 'explain', 'models'},
    'render': {'interface', 'pixels'},
    'live': {'interface', 'pixels'},
    'data': {'interface', 'pixels', 'explain', 'models'},
    'fleet': {'interface', 'pixels', 'explain', 'models', 'engine', 'data'},
    'drive': {'interface', 'pixels', 'engine', 'data'},
    'bench': {'models', 'engine'},
    'ros': {'interface', 'pixels', 'explain', 'models', 'engine', 'live', 'data', 'drive',
            'bench', 'arguments'},
    'tools': {'interface', 'pixels', 'explain', 'models', 'engine', 'render', 'data', 'fleet',
              'arguments'},
    'arguments': set(),  # argparse types of the console scripts
    '__init__': {'moved', 'explain', 'models'},
    # The console scripts' entry points: the ROS layer's stop request, every executable's
    # module by name when called (entry_points.py).
    'entry_points': {'ros'},
}
# Outside the package: what a layer may import beyond the standard library.
THIRD_PARTY = {
    'interface': set(),
    'moved': set(),
    'core': set(),
    'pixels': {'numpy', 'cv2', 'simplejpeg'},
    # onnx: the in-graph VisualBackProp reads and extends ONNX graphs (onnx_vbp);
    # captum: the reference LRP and Grad-CAM (reference, a test and benchmark extra).
    'explain': {'numpy', 'torch', 'captum', 'onnx'},
    # onnx: ONNX model files; safetensors, torchfile: weights; yaml: model cards; cv2: resize.
    'models': {'numpy', 'torch', 'safetensors', 'torchfile', 'onnx', 'yaml', 'cv2'},
    # onnx, onnxruntime: the onnxruntime backend and the in-memory export (onnx_backend).
    'engine': {'numpy', 'torch', 'cv2', 'onnx', 'onnxruntime'},
    'render': {'numpy', 'cv2', 'PIL', 'matplotlib'},
    'live': {'numpy', 'foxglove', 'websocket'},
    'data': {'numpy', 'torch', 'cv2', 'rosbags', 'yaml', 'pyarrow'},
    'fleet': {'numpy', 'ray'},
    'drive': {'yaml', 'ament_index_python'},
    'bench': {'torch'},
    'entry_points': set(),
    'arguments': set(),
}
ROS_ONLY = {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'rcl_interfaces',
            'builtin_interfaces', 'lifecycle_msgs'}
COMPUTING = {'torch', 'cv2'}  # a module that imports rclpy computes nothing
# Console scripts share no code with each other (their argparse types are vbp_ros.arguments):
# a library a second tool needs lives a layer down.
TOOL_HELPERS = {'vbp_ros.tools'}


def layer_of(module: str) -> str:
    """The layer of a module of the package, e.g. 'vbp_ros.engine.engine' -> 'engine'."""
    parts = module.split('.')
    assert parts[0] == 'vbp_ros', module
    return parts[1] if len(parts) > 1 else '__init__'


def module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The package modules (relative imports resolved) and the top-level outside modules a
    source file imports, wherever the import statement stands."""
    package = module_name(path).split('.')
    if path.name != '__init__.py':
        package = package[:-1]
    own, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names = ['.'.join(base + ([node.module] if node.module else []))]
            if not node.module:  # from . import x: the modules x
                names = [f'{names[0]}.{alias.name}' for alias in node.names]
        else:
            continue
        for name in names:
            (own if name.split('.')[0] == 'vbp_ros' else outside).add(name)
    return own, {name.split('.')[0] for name in outside}


def layer_violations(paths: list[Path]) -> list[str]:
    standard = set(sys.stdlib_module_names) | {'__future__'}
    found = []
    for path in paths:
        layer = layer_of(module_name(path))
        own, outside = imports(path)
        for name in own:
            target = layer_of(name)
            if target != layer and target not in LAYERS[layer]:
                found.append(f'{module_name(path)} imports {name}: {layer} -> {target}')
        allowed = THIRD_PARTY.get(layer)
        if allowed is not None:
            for name in outside - standard - allowed:
                found.append(f'{module_name(path)} ({layer}) imports {name}')
        if outside & ROS_ONLY and layer != 'ros':
            found.append(f'{module_name(path)} imports ROS outside the ros layer')
        if outside & ROS_ONLY and outside & COMPUTING:
            found.append(f'{module_name(path)} imports rclpy and computes')
        if layer == 'tools':
            found += [f'{module_name(path)} imports {name}: a tool imports another tool'
                      for name in own if layer_of(name) == 'tools' and name not in TOOL_HELPERS]
    return found


def package_sources() -> list[Path]:
    return sorted(PACKAGE.rglob('*.py'))


def test_every_module_belongs_to_a_layer() -> None:
    assert {layer_of(module_name(path)) for path in package_sources()} <= set(LAYERS)
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name in LAYERS):
        docstring = ast.get_docstring(ast.parse((folder / '__init__.py').read_text()))
        assert docstring and 'import' in docstring, f'{folder.name}/__init__.py'


def test_imports_follow_the_layers() -> None:
    assert layer_violations(package_sources()) == []


@pytest.mark.parametrize('source, layer, message', [
    ('from ..ros.messages import image_message\n', 'engine', 'engine -> ros'),
    ('from ..data.sessions import find_topics\n', 'engine', 'engine -> data'),
    ('from ..ros import drive\n', 'tools', 'tools -> ros'),
    ('from .. import models\n', 'explain', 'explain -> models'),
    ('from ..engine.engine import VBPEngine\n', 'data', 'data -> engine'),
    ('def f():\n    from ..engine import engine\n', 'pixels', 'pixels -> engine'),
    ('import rclpy\n', 'data', 'ROS outside the ros layer'),
    ('import torch\nimport rclpy\n', 'ros', 'imports rclpy and computes'),
    ('import rosbags\n', 'explain', 'imports rosbags'),
    ('import ray\n', 'data', 'imports ray'),
    ('from ..fleet.worker import SegmentWorker\n', 'data', 'data -> fleet'),
    ('from ..engine import engine\n', 'models', 'models -> engine'),
    ('from .figure2 import read_image\n', 'tools', 'a tool imports another tool'),
])
def test_the_layer_check_catches_a_forbidden_import(tmp_path: Path, monkeypatch, source: str,
                                                    layer: str, message: str) -> None:
    folder = tmp_path / 'vbp_ros' / layer
    folder.mkdir(parents=True)
    planted = folder / 'planted.py'
    planted.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], 'REPOSITORY', tmp_path)
    assert any(message in violation for violation in layer_violations([planted]))


def test_parameter_file_matches_the_node_defaults() -> None:
    import yaml

    from vbp_ros.ros.parameters import PARAMETERS

    document = yaml.safe_load((REPOSITORY / 'config' / 'vbp.yaml').read_text())
    (key, section), = document.items()
    assert key.endswith('vbp')
    values = section['ros__parameters']
    # An empty list cannot stand in a parameter file (rcl reads [] as a byte array): such a
    # parameter is documented there in a comment.
    assert values == {name: default for name, (default, _) in PARAMETERS.items()
                      if default != []}


def declared_defaults(module: object) -> dict[str, object]:
    """Name and default of every ``declare_parameter`` call in ``module`` (but those declared
    by their type alone, whose default is an empty list: a parameter file names them in a
    comment)."""
    from rclpy.parameter import Parameter

    defaults = {}
    for call in ast.walk(ast.parse(Path(module.__file__).read_text(encoding='utf-8'))):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                call.func.attr == 'declare_parameter':
            code = compile(ast.Expression(call.args[1]), module.__file__, 'eval')
            default = eval(code, vars(module))  # noqa: S307
            if not isinstance(default, Parameter.Type):
                defaults[ast.literal_eval(call.args[0])] = default
    return defaults


@pytest.mark.parametrize('module_name, params_file, node_name', [
    ('vbp_ros.ros.road_camera', 'road_camera.yaml', 'road_camera'),
    ('vbp_ros.ros.recorder', 'record.yaml', 'vbp_record'),
])
def test_camera_and_recorder_parameter_files_match_their_defaults(
        module_name: str, params_file: str, node_name: str) -> None:
    from vbp_ros.drive.plan import node_parameters

    module = importlib.import_module(module_name)
    assert node_parameters(REPOSITORY / 'config' / params_file, node_name) == \
        declared_defaults(module)


def interface_value(node: ast.expr) -> object:
    """A literal, or a name of vbp_ros.interface (``interface.VBP_PARAMS``)."""
    from vbp_ros import interface

    if isinstance(node, ast.Attribute) and getattr(node.value, 'id', None) == 'interface':
        return getattr(interface, node.attr)
    return ast.literal_eval(node)


def test_launch_file_names_what_exists() -> None:
    import yaml

    path = REPOSITORY / 'launch' / 'vbp.launch.py'
    compile(path.read_text(encoding='utf-8'), str(path), 'exec')
    calls = launch_calls(path)
    setup = (REPOSITORY / 'setup.py').read_text(encoding='utf-8')
    for node in calls['Node']:
        assert keyword(node, 'package') == 'vbp_ros'
        assert f"'{keyword(node, 'executable')} = " in setup
    for join in calls['PathJoinSubstitution']:
        parts = [interface_value(e) for e in join.args[0].elts[1:]]
        assert (REPOSITORY.joinpath(*parts)).is_file(), parts
    arguments = {ast.literal_eval(call.args[0]): keyword(call, 'default_value')
                 for call in calls['DeclareLaunchArgument']}
    assert interface_value(arguments['image_topic']) == 'camera/image_raw'
    node_defaults = yaml.safe_load((REPOSITORY / 'config' / 'vbp.yaml').read_text())
    (section,) = node_defaults.values()
    assert arguments['device'] == section['ros__parameters']['device']
    assert arguments['model'] == section['ros__parameters']['model']


def test_fastdds_profile_enlarges_shared_memory() -> None:
    root = ElementTree.parse(REPOSITORY / 'config' / 'fastdds.xml').getroot()
    namespace = {'dds': 'http://www.eprosima.com'}
    sizes = [int(e.text) for e in root.iterfind('.//dds:segment_size', namespace)]
    assert sizes and min(sizes) >= 8 * 2**20
    profile = root.find('.//dds:participant', namespace)
    assert profile.get('is_default_profile') == 'true'


@pytest.mark.parametrize('old, new', [('vbp_ros.core.vbp', 'vbp_ros.explain.vbp'),
                                      ('vbp_ros.core.loading', 'vbp_ros.models.loading'),
                                      ('vbp_ros.engine.preprocess', 'vbp_ros.models.preprocess'),
                                      ('vbp_ros.data.fleet.worker', 'vbp_ros.fleet.worker')])
def test_a_moved_module_imports_from_its_old_path_with_a_warning(old: str, new: str) -> None:
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f'{old} moved to {new}'):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
