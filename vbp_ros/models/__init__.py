"""Networks, model files and their cards, loading and preprocessing (frame to network input);
ROS-free (imports interface, pixels and explain)."""
