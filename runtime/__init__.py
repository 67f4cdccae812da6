"""The lab's sandbox runtime: nodes that run a real Docker engine.

A plain Python library (no Django). `get_driver()` is the one place that
wires a driver by name; everything else depends on `runtime.model.Driver`.
"""
from __future__ import annotations

import os

from .model import (Driver, ExecResult, LabFull, LabRuntimeError, Node, NodeNotFound, NodeSpec,
                    Terminal)

__all__ = ["Driver", "ExecResult", "LabFull", "LabRuntimeError", "Node", "NodeNotFound", "NodeSpec",
           "Terminal", "get_driver"]

_drivers: dict = {}


def get_driver(name: str | None = None) -> Driver:
    """Return the process-wide driver called `name` (default: $LAB_DRIVER or 'builtin')."""
    name = name or os.environ.get("LAB_DRIVER", "builtin")
    if name not in _drivers:
        if name == "builtin":
            from .builtin import BuiltinDriver
            _drivers[name] = BuiltinDriver()
        elif name == "docker":
            from .dockerdriver import DockerDriver
            _drivers[name] = DockerDriver()
        elif name == "fake":
            from .fakedriver import FakeDriver
            _drivers[name] = FakeDriver()
        else:
            raise LabRuntimeError(f"unknown runtime driver {name!r} (LAB_DRIVER): "
                                  "use 'builtin' or 'docker'", permanent=True)
    return _drivers[name]
