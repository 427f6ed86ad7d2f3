"""Launch vbp_node with the package's parameter file and Fast DDS profile.

    ros2 launch vbp_ros vbp.launch.py model:=/path/to/model.safetensors
    ros2 launch vbp_ros vbp.launch.py image_topic:=/front/image_raw namespace:=car1

drive.launch.py starts a whole drive (camera, rviz2, recorder) around the same node.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vbp_ros import interface


def generate_launch_description() -> LaunchDescription:
    """vbp_node on the camera topic, in the namespace, with its parameter file."""
    share = FindPackageShare('vbp_ros')
    image_topic = LaunchConfiguration('image_topic')
    return LaunchDescription([
        DeclareLaunchArgument('model', default_value='',
                              description=interface.MODEL_DESCRIPTION),
        DeclareLaunchArgument('image_topic', default_value=interface.DEFAULT_CAMERA_TOPIC,
                              description='camera topic; its /compressed sibling is used when '
                                          'input_transport is compressed'),
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution(
                                  [share, 'config', interface.VBP_PARAMS]),
                              description='vbp_node parameters (ROS 2 parameter file)'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto, cpu, cuda or cuda:N (with onnxruntime also '
                                          'tensorrt[:N])'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        # Camera-sized images need a larger shared-memory segment than Fast DDS's default.
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               PathJoinSubstitution([share, 'config', interface.FASTDDS_PROFILE])),
        Node(package='vbp_ros', executable='vbp_node', name=interface.VBP_NODE,
             namespace=LaunchConfiguration('namespace'), output='screen',
             parameters=[LaunchConfiguration('params_file'),
                         {'model': LaunchConfiguration('model'),
                          'device': LaunchConfiguration('device')}],
             remappings=[(interface.IMAGE_TOPIC, image_topic),
                         (interface.COMPRESSED_IMAGE_TOPIC, [image_topic, '/compressed'])]),
    ])
