"""Command-line tools (console scripts): ROS-free, built on the core and engine layers."""
