"""The built-in driver: nodes made of Linux namespaces, overlayfs, veth and bridges.

See driver.py for the design; the package's parts are named in its docstring.
"""
from ..limits import capacity, mem_available, node_limits
from ..model import LabFull
from .cgroups import ALLOWED_DEVICES, cgroup_limit_writes, node_cgroup_dirs, node_pids
from .common import NODE_ENV, POOL_SESSION
from .driver import START_TIMEOUT, BuiltinDriver

__all__ = ["ALLOWED_DEVICES", "BuiltinDriver", "LabFull", "NODE_ENV", "POOL_SESSION",
           "START_TIMEOUT", "capacity", "cgroup_limit_writes", "mem_available", "node_cgroup_dirs",
           "node_limits", "node_pids"]
