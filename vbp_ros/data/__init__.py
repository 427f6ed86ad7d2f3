"""Data: synthetic roads, camera sources, bags, recordings, sessions, training sets; reads and
writes only (imports interface, pixels, explain and models; never ROS)."""
