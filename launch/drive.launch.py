"""A drive: road_camera (or an existing camera topic) into vbp_node, optionally rviz2 and a
recorder, all in one namespace with the package's Fast DDS profile.

    ros2 launch vbp_ros drive.launch.py
    ros2 launch vbp_ros drive.launch.py source:=video path:=/data/drive.mp4 rviz:=true
    ros2 launch vbp_ros drive.launch.py source:=topic image_topic:=/front/image_raw \
        model:=/path/to/model.safetensors device:=cuda
    ros2 launch vbp_ros drive.launch.py record:=true bag_dir:=/data/bags/run1 namespace:=car1
    ros2 launch vbp_ros drive.launch.py record:=true recorder:=vbp_record use_sim_time:=true
    ros2 launch vbp_ros drive.launch.py record:=true record_overlay:=true  # for rviz2 replays

Optional pieces (rviz2 for rviz:=true, rosbag2 for recorder:=rosbag2) are checked before anything
starts. A process of the drive that fails (vbp_node on a bad parameter, the recorder on a full
disk) stops the whole drive with an error (exit code 1); respawn:=true restarts vbp_node
instead. One that finishes (exit code 0) ends the drive cleanly, and so does closing rviz2.
Every topic is relative, so namespace:= isolates a whole drive. A recording holds the camera
frames, the masks and their region, not the overlays (vbp-review draws them; vbp_node draws
none for the recorder): record_overlay:=true adds vbp/overlay.

What is plain Python lives in the package, shared with the pip runner vbp-drive: the names
(topics, files, choices) in vbp_ros.interface, the recorded topics, the recorder command, the
optional pieces and the stop timeouts in vbp_ros.drive.plan.
"""

from functools import partial
from pathlib import Path

from launch import Action, LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, GroupAction, OpaqueFunction,
                            SetEnvironmentVariable, Shutdown)
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from vbp_ros import interface
from vbp_ros.drive import plan

BOOLEAN = ['true', 'false']


def _config_file(name: str) -> PathJoinSubstitution:
    """A file of the package's installed config folder."""
    return PathJoinSubstitution([FindPackageShare('vbp_ros'), 'config', name])


def _text(argument: str) -> ParameterValue:
    """A launch argument passed as a string parameter even when it reads as YAML (a path
    named 2024 or true)."""
    return ParameterValue(LaunchConfiguration(argument), value_type=str)


def _arguments() -> list[DeclareLaunchArgument]:
    """The launch arguments, with their defaults and, where the set is closed, choices."""
    return [
        DeclareLaunchArgument('source', default_value='synthetic',
                              choices=list(interface.LAUNCH_SOURCES),
                              description="road_camera's frames: synthetic roads, a video, a "
                                          'folder of images, or topic: an existing camera '
                                          'publishes image_topic (no road_camera)'),
        DeclareLaunchArgument('path', default_value='',
                              description='video file or image folder for source video or images'),
        DeclareLaunchArgument('image_topic', default_value=interface.DEFAULT_CAMERA_TOPIC,
                              description='camera topic between road_camera and vbp_node; its '
                                          '/compressed sibling is used when input_transport is '
                                          'compressed'),
        DeclareLaunchArgument('model', default_value='',
                              description=interface.MODEL_DESCRIPTION),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto, cpu, cuda or cuda:N (with onnxruntime also '
                                          'tensorrt[:N])'),
        DeclareLaunchArgument('params_file', default_value=_config_file(interface.VBP_PARAMS),
                              description='vbp_node parameters (ROS 2 parameter file)'),
        DeclareLaunchArgument('camera_params_file',
                              default_value=_config_file(interface.CAMERA_PARAMS),
                              description='road_camera parameters (ROS 2 parameter file)'),
        DeclareLaunchArgument('record_params_file',
                              default_value=_config_file(interface.RECORD_PARAMS),
                              description='recorder parameters: the topics, for either recorder'),
        DeclareLaunchArgument('record', default_value='false', choices=BOOLEAN,
                              description='record the camera and the outputs into a rosbag2 '
                                          'directory (MCAP)'),
        DeclareLaunchArgument('record_overlay', default_value='false', choices=BOOLEAN,
                              description='record vbp/overlay too, for replays in rviz2 or '
                                          'Foxglove (vbp-review draws overlays without it)'),
        DeclareLaunchArgument('bag_dir', default_value='',
                              description="new bag directory; empty: record_params_file's "
                                          'bag_dir, or a name the recorder makes up'),
        DeclareLaunchArgument('recorder', default_value='auto',
                              choices=list(interface.RECORDERS),
                              description="rosbag2 ('ros2 bag record -s mcap'), vbp_record (this "
                                          "package's recorder), or auto: rosbag2 when installed"),
        DeclareLaunchArgument('rviz', default_value='false', choices=BOOLEAN,
                              description='show the camera, the overlay and the mask in rviz2'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of every node and its relative topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false', choices=BOOLEAN,
                              description='every node and the recorder follow /clock'),
        DeclareLaunchArgument('respawn', default_value='false', choices=BOOLEAN,
                              description='restart vbp_node when it exits (false: its exit '
                                          'stops the drive with an error)'),
        DeclareLaunchArgument('managed', default_value='false', choices=BOOLEAN,
                              description='start vbp_node as a managed (lifecycle) node, '
                                          'configured and activated by the launch'),
        DeclareLaunchArgument('foxglove_port', default_value='0',
                              description='live view for Foxglove/Lichtblick on this WebSocket '
                                          'port (127.0.0.1); 0: off'),
    ]


def _check_optional_pieces(context: LaunchContext) -> list[Action]:
    """Before anything starts: refuse, in one message, what this machine cannot run."""
    config = context.launch_configurations
    problems = plan.missing_pieces(rviz=config['rviz'] == 'true',
                                   record=config['record'] == 'true',
                                   recorder=config['recorder'])
    if problems:
        raise RuntimeError('; '.join(problems))
    return []


def _on_drive_process_exit(event: object, context: LaunchContext,
                           respawns: bool = False) -> list[Action] | None:
    """A drive process that exits while the drive runs ends it: cleanly when it exited with
    code 0 (a camera at the end of its video; or a terminal's Ctrl-C, which reaches every
    process directly, often before launch itself), with exit code 1 otherwise (launch reports
    an exception raised here and shuts everything down). With respawn:=true launch restarts
    vbp_node instead."""
    if context.is_shutdown or (respawns and
                               context.launch_configurations.get('respawn') == 'true'):
        return None
    if event.returncode == 0:
        return [Shutdown(reason=f'{event.action.name} finished')]
    raise RuntimeError(f'{event.action.name} exited with code {event.returncode} while the '
                       'drive was running (its output is above); stopping the drive')


def _stop_timeouts(node_name: str) -> dict[str, str]:
    """How long launch waits after SIGINT before SIGTERM, and then before SIGKILL: the
    recorder may need a while to write its backlog."""
    seconds = str(plan.STOP_TIMEOUT_S[node_name])
    return {'sigterm_timeout': seconds, 'sigkill_timeout': seconds}


def _recorded_topics(config: dict[str, str]) -> list[str]:
    """What the recorder records (nothing without record:=true)."""
    if config['record'] != 'true':
        return []
    return plan.recorded_topics(Path(config['record_params_file']), config['image_topic'],
                                config['record_overlay'] == 'true')


def _camera(context: LaunchContext) -> list[Action]:
    """road_camera (none for source:=topic), whose first frame waits for vbp_node, for the
    recorder when it records the camera and when it records vbp_node's outputs, and for rviz2,
    so that frame one is processed and recorded with its outputs."""
    config = context.launch_configurations
    if config['source'] == 'topic':
        return []
    recorded = _recorded_topics(config)
    records_camera = plan.records_camera(recorded, config['image_topic'], config['namespace'])
    waits = {'wait_for_subscribers': plan.camera_subscribers(
        records_camera, watchers=int(config['rviz'] == 'true'))}
    awaited = plan.awaited_outputs(recorded, config['namespace'])
    if awaited:  # an empty list is no parameter value launch can pass
        waits['wait_for_topics'] = awaited
    return [Node(package='vbp_ros', executable='road_camera', name=interface.CAMERA_NODE,
                 output='screen', on_exit=_on_drive_process_exit,
                 **_stop_timeouts(interface.CAMERA_NODE),
                 parameters=[LaunchConfiguration('camera_params_file'),
                             {'source': LaunchConfiguration('source'), 'path': _text('path'),
                              'use_sim_time': LaunchConfiguration('use_sim_time'), **waits}],
                 remappings=[(interface.IMAGE_TOPIC, LaunchConfiguration('image_topic'))])]


def _recorder(context: LaunchContext) -> list[Action]:
    """The recorder of record:=true, chosen at run time: 'ros2 bag record' or vbp_record."""
    config = context.launch_configurations
    params_file = Path(config['record_params_file'])
    bag_dir = plan.record_bag_dir(params_file, config['bag_dir'])
    use_sim_time = config['use_sim_time'] == 'true'
    topics = _recorded_topics(config)
    if plan.chosen_recorder(config['recorder']) == 'rosbag2':
        command = plan.ros2_bag_record_command(params_file, topics, bag_dir, config['namespace'],
                                               use_sim_time)
        return [ExecuteProcess(cmd=command, output='screen', on_exit=_on_drive_process_exit,
                               **_stop_timeouts(interface.RECORDER_NODE))]
    return [Node(package='vbp_ros', executable='vbp_record', name=interface.RECORDER_NODE,
                 output='screen', on_exit=_on_drive_process_exit,
                 parameters=[str(params_file), {'bag_dir': bag_dir, 'topics': topics,
                                                'use_sim_time': use_sim_time}],
                 **_stop_timeouts(interface.RECORDER_NODE))]


def _vbp_node_arguments() -> dict:
    """What vbp_node is started with, managed or not."""
    image_topic = LaunchConfiguration('image_topic')
    return dict(
        name=interface.VBP_NODE, output='screen', respawn=LaunchConfiguration('respawn'),
        respawn_delay=plan.RESPAWN_DELAY_S,
        on_exit=partial(_on_drive_process_exit, respawns=True),
        **_stop_timeouts(interface.VBP_NODE),
        parameters=[LaunchConfiguration('params_file'),
                    {'model': _text('model'), 'device': LaunchConfiguration('device'),
                     'foxglove_port': LaunchConfiguration('foxglove_port'),
                     'use_sim_time': LaunchConfiguration('use_sim_time')}],
        remappings=[(interface.IMAGE_TOPIC, image_topic),
                    (interface.COMPRESSED_IMAGE_TOPIC, [image_topic, '/compressed'])])


def _managed_vbp_node(context: LaunchContext) -> list[Action]:
    """vbp_lifecycle_node, configured once it runs and activated once a configure has made it
    inactive (not after a deactivate: that is the user's or a lifecycle manager's, and stays)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition
    from rclpy.exceptions import InvalidHandle

    class ShutdownSafeLifecycleNode(LifecycleNode):
        """launch_ros's LifecycleNode, except that a Ctrl-C while a transition waits for the
        node's change_state service ends the wait: upstream's wait on launch's own ROS node,
        destroyed by the shutdown under it, raised 'cannot use Destroyable because destruction
        was requested', and launch exited 1 after a Ctrl-C in the node's first seconds."""

        def _call_change_state(self, request, context: LaunchContext) -> None:
            try:
                super()._call_change_state(request, context)
            except InvalidHandle:
                if not context.is_shutdown:
                    raise

    node = ShutdownSafeLifecycleNode(package='vbp_ros', executable='vbp_lifecycle_node',
                                     namespace='', **_vbp_node_arguments())

    def change(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))

    return [
        RegisterEventHandler(OnProcessStart(
            target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
            entities=[change(Transition.TRANSITION_ACTIVATE)])),
        node,
    ]


def generate_launch_description() -> LaunchDescription:
    """road_camera -> vbp_node, with rviz2 and a recorder on request."""
    image_topic = LaunchConfiguration('image_topic')
    sim_time = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    return LaunchDescription([
        *_arguments(),
        OpaqueFunction(function=_check_optional_pieces),
        # Camera-sized images need a larger shared-memory segment than Fast DDS's default.
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               _config_file(interface.FASTDDS_PROFILE)),
        GroupAction([
            PushRosNamespace(LaunchConfiguration('namespace')),
            OpaqueFunction(function=_camera),
            Node(package='vbp_ros', executable='vbp_node',
                 condition=UnlessCondition(LaunchConfiguration('managed')),
                 **_vbp_node_arguments()),
            OpaqueFunction(function=_managed_vbp_node,
                           condition=IfCondition(LaunchConfiguration('managed'))),
            Node(package='rviz2', executable='rviz2', output='screen',
                 arguments=['-d', _config_file(interface.RVIZ_CONFIG)],
                 parameters=[sim_time], on_exit=Shutdown(reason='rviz2 closed'),
                 remappings=[(interface.resolve_topic(interface.DEFAULT_CAMERA_TOPIC, ''),
                              image_topic), *plan.rviz_remappings()],
                 condition=IfCondition(LaunchConfiguration('rviz'))),
            OpaqueFunction(function=_recorder,
                           condition=IfCondition(LaunchConfiguration('record'))),
        ]),
    ])
