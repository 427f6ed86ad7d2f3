"""Console scripts, ROS-free (imports interface, core, pixels, engine, render and data)."""
