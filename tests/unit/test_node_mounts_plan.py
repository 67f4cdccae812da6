"""What nodestart.sh mounts for a built-in node: one table, /dev from the node's disk."""
from __future__ import annotations

import os
from pathlib import Path

from runtime.builtin import launch


def test_one_table_mounts_the_root_then_dev_from_the_disk_then_the_devices():
    table = launch.mount_table(Path("/n/lower"), Path("/n/fs"),
                               [("cpu", "cpu"), ("unified", "cgroup2")])
    lines = table.splitlines()
    assert lines[0] == ("overlay /n/fs/root overlay lowerdir=/n/lower,upperdir=/n/fs/upper,"
                        "workdir=/n/fs/work 0 0")
    targets = [line.split()[1] for line in lines]
    assert targets.index("/n/fs/root/dev") < targets.index("/n/fs/root/dev/null")
    assert "/n/fs/dev /n/fs/root/dev none bind 0 0" in lines
    for name in launch.DEV_FILES:
        assert f"/dev/{name} /n/fs/root/dev/{name} none bind 0 0" in lines
    assert "cgroup2 /n/fs/root/sys/fs/cgroup/unified cgroup2 nosuid,nodev,noexec,X-mount.mkdir 0 0" \
        in lines
    assert lines[-1] == "tmpfs /n/fs/root/run tmpfs mode=755,nosuid,nodev 0 0"
    assert not any(" tmpfs " in line and line.split()[1] == "/n/fs/root/dev" for line in lines)


def test_the_nodes_dev_is_made_on_its_disk_before_it_starts(tmp_path):
    (tmp_path / "upper").mkdir()
    launch.node_dev_dir(tmp_path, os.getuid())
    launch.node_dev_dir(tmp_path, os.getuid())  # a restored disk has it already
    dev = tmp_path / "dev"
    for name in launch.DEV_FILES:
        assert (dev / name).is_file()
    for name, target in launch.DEV_LINKS:
        assert os.readlink(dev / name) == target
    for name in launch.DEV_DIRS:
        assert (dev / name).is_dir()
    assert (tmp_path / "upper/.oldroot").is_dir()
