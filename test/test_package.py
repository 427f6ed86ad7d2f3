"""The ament_python package is complete and the layers import only what they may."""

from __future__ import annotations

import ast
import configparser
import importlib
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

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
        assert callable(script.load())


def test_ament_index_finds_the_installed_package() -> None:
    from ament_index_python.packages import get_package_share_directory

    if 'AMENT_PREFIX_PATH' not in os.environ:
        pytest.fail('AMENT_PREFIX_PATH is not set: run the tests through the README command')
    share = Path(get_package_share_directory('vbp_ros'))
    assert (share / 'package.xml').is_file()


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding='utf-8'))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def test_core_imports_torch_and_numpy_only() -> None:
    allowed = {'__future__', 'collections', 'copy', 'dataclasses', 'functools', 'importlib',
               'json', 'math', 'operator', 'pathlib', 're', 'struct', 'traceback', 'typing',
               'warnings',
               'numpy', 'torch', 'safetensors', 'torchfile',
               'captum'}  # captum: imported lazily by core/reference.py (a test extra)
    for path in (PACKAGE / 'core').glob('*.py'):
        assert imported_modules(path) <= allowed, path.name


def test_only_the_ros_adapters_import_rclpy() -> None:
    for path in PACKAGE.rglob('*.py'):
        if 'ros' not in path.relative_to(PACKAGE).parts[:-1]:
            assert not imported_modules(path) & {'rclpy', 'sensor_msgs', 'std_msgs'}, path


def test_parameter_file_matches_the_node_defaults() -> None:
    import yaml

    from vbp_ros.ros.vbp_node import PARAMETERS

    document = yaml.safe_load((REPOSITORY / 'config' / 'vbp.yaml').read_text())
    (key, section), = document.items()
    assert key.endswith('vbp')
    values = section['ros__parameters']
    assert values == {name: default for name, (default, _) in PARAMETERS.items()}


def declared_defaults(module: object) -> dict[str, object]:
    """Name and default of every ``declare_parameter`` call in ``module``."""
    defaults = {}
    for call in ast.walk(ast.parse(Path(module.__file__).read_text(encoding='utf-8'))):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                call.func.attr == 'declare_parameter':
            default = compile(ast.Expression(call.args[1]), module.__file__, 'eval')
            defaults[ast.literal_eval(call.args[0])] = eval(default, vars(module))  # noqa: S307
    return defaults


@pytest.mark.parametrize('module_name, params_file, node_name', [
    ('vbp_ros.ros.road_camera', 'road_camera.yaml', 'road_camera'),
    ('vbp_ros.ros.recorder', 'record.yaml', 'vbp_record'),
])
def test_camera_and_recorder_parameter_files_match_their_defaults(
        module_name: str, params_file: str, node_name: str) -> None:
    from vbp_ros.ros.drive_plan import node_parameters

    module = importlib.import_module(module_name)
    assert node_parameters(REPOSITORY / 'config' / params_file, node_name) == \
        declared_defaults(module)


def launch_calls(path: Path) -> dict[str, list[ast.Call]]:
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.setdefault(node.func.id, []).append(node)
    return calls


def keyword(call: ast.Call, name: str) -> object:
    value = next(k.value for k in call.keywords if k.arg == name)
    return ast.literal_eval(value) if isinstance(value, ast.Constant) else value


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
        parts = [ast.literal_eval(e) for e in join.args[0].elts[1:]]
        assert (REPOSITORY.joinpath(*parts)).is_file(), parts
    arguments = {ast.literal_eval(call.args[0]): keyword(call, 'default_value')
                 for call in calls['DeclareLaunchArgument']}
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
