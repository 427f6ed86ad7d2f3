"""Pixels: frame checks and errors, colour conversion, crops, encodings, overlays (numpy, OpenCV;
imports nothing else of the package)."""
