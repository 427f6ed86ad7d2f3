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
            'vbp_node = vbp_ros.ros.entry_points:vbp_node',
            'vbp_lifecycle_node = vbp_ros.ros.entry_points:vbp_lifecycle_node',
            'road_camera = vbp_ros.ros.entry_points:road_camera',
            'vbp_record = vbp_ros.ros.entry_points:vbp_record',
            'vbp-drive = vbp_ros.ros.drive:main',
            'vbp-latency = vbp_ros.ros.latency_bench:main',
            'vbp-ceiling = vbp_ros.ros.ceiling_bench:main',
            'vbp-import-t7 = vbp_ros.tools.import_t7:main',
            'vbp-figure2 = vbp_ros.tools.figure2:main',
            'vbp-bench = vbp_ros.tools.bench:main',
            'vbp-agreement = vbp_ros.tools.agreement:main',
            'vbp-ingest = vbp_ros.tools.ingest:main',
            'vbp-train = vbp_ros.tools.train:main',
            'vbp-eval = vbp_ros.tools.evaluate:main',
            'vbp-inspect = vbp_ros.tools.inspect:main',
            'vbp-review = vbp_ros.tools.review:main',
            'vbp-export = vbp_ros.tools.export:main',
            'vbp-card = vbp_ros.tools.card:main',
            'vbp-gpu-check = vbp_ros.tools.gpu_check:main',
            'vbp-fleet = vbp_ros.tools.fleet:main',
            'vbp-fleet-bench = vbp_ros.tools.fleet_bench:main',
        ],
    },
)
