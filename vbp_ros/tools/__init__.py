"""Console scripts, ROS-free (imports interface, pixels, explain, models, engine, render, data
and fleet)."""
