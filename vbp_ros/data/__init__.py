"""Data: synthetic roads, camera sources, bags, recordings, sessions, training sets (imports
interface, core, pixels and engine; never ROS)."""
