"""Deprecated: ``core/`` was split into :mod:`vbp_ros.models` and :mod:`vbp_ros.explain`.

Its old module paths (``vbp_ros.core.vbp`` and the others) still import, with a
DeprecationWarning, through :mod:`vbp_ros.moved`; this package goes in the next release.
"""
