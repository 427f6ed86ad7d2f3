"""ament_python package vbp_ros: ``colcon build`` or ``pip install .``."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'vbp_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['models/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml') +
         glob('config/*.rviz') + glob('config/*.json')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='vbp_ros maintainers',
    maintainer_email='maintainers@vbp-ros.dev',
    description='Live VisualBackProp masks for end-to-end steering networks (ROS 2).',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'vbp_node = vbp_ros.entry_points:vbp_node',
            'vbp_lifecycle_node = vbp_ros.entry_points:vbp_lifecycle_node',
            'road_camera = vbp_ros.entry_points:road_camera',
            'vbp_record = vbp_ros.entry_points:vbp_record',
            'vbp-drive = vbp_ros.entry_points:vbp_drive',
            'vbp-latency = vbp_ros.entry_points:vbp_latency',
            'vbp-ceiling = vbp_ros.entry_points:vbp_ceiling',
            'vbp-import-t7 = vbp_ros.entry_points:vbp_import_t7',
            'vbp-figure2 = vbp_ros.entry_points:vbp_figure2',
            'vbp-bench = vbp_ros.entry_points:vbp_bench',
            'vbp-agreement = vbp_ros.entry_points:vbp_agreement',
            'vbp-ingest = vbp_ros.entry_points:vbp_ingest',
            'vbp-train = vbp_ros.entry_points:vbp_train',
            'vbp-eval = vbp_ros.entry_points:vbp_eval',
            'vbp-inspect = vbp_ros.entry_points:vbp_inspect',
            'vbp-review = vbp_ros.entry_points:vbp_review',
            'vbp-export = vbp_ros.entry_points:vbp_export',
            'vbp-card = vbp_ros.entry_points:vbp_card',
            'vbp-gpu-check = vbp_ros.entry_points:vbp_gpu_check',
            'vbp-fleet = vbp_ros.entry_points:vbp_fleet',
            'vbp-fleet-bench = vbp_ros.entry_points:vbp_fleet_bench',
        ],
    },
)
