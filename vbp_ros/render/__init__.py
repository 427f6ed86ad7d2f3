"""Rendering for review and reports: annotated frames, contact sheets, videos, plots
(numpy, OpenCV, Pillow, matplotlib; imports pixels and interface only)."""
