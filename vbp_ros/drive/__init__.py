"""A drive without ROS imports: what it starts (plan), the processes (supervisor) and what it
produced (summary); shared by drive.launch.py and vbp-drive (imports data, pixels, interface)."""
