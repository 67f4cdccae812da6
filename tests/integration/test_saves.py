"""Saved machines with real nodes: a node's files, images and containers
survive its end and come back on a new node, also one with another uid range
(runtime/builtin/persist.py, runtime/saves.py)."""
import asyncio
import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime import LabRuntimeError, NodeSpec, saves
from runtime.builtin.cgroups import node_pids


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_SAVE_DIR", str(tmp_path / "saves"))
    return saves.get_store()


def test_a_saved_machine_comes_back_with_its_files_images_and_running_containers(
        driver, nodes, store, lab_registry):
    node = nodes.start()
    made = nodes.sh(node, "echo kept > /root/note.txt && "
                          "docker run -d --name keeper alpine sleep 100000 >/dev/null && "
                          "docker exec keeper sh -c 'touch /owned && chown 999:998 /owned' && "
                          "docker commit keeper ourbox:v1 >/dev/null && "
                          "docker run --name done alpine true && docker ps -q | wc -l", timeout=180)
    assert made.ok and made.output.split()[-1] == "1", made.output
    info = asyncio.run(driver.save_and_stop(node.id, "u1/first-containers/node1"))
    # The node is gone (its disk was packed while its mounts were held at rest).
    assert not node_pids(node.id) and not driver._node_dir(node.id).exists()
    assert info.meta["running"][0][1] == "keeper" and info.size < 200 * 2**20

    # Another node takes the first free uid range: the restored one gets another.
    other = nodes.start()
    again = nodes.start(restore="u1/first-containers/node1")
    assert again.extra["uid_base"] != info.meta["uid_base"]
    seen = nodes.sh(again, "cat /root/note.txt; docker image ls --format '{{.Repository}}:{{.Tag}}' "
                           "| sort; docker ps --format '{{.Names}}'; docker ps -a --format "
                           "'{{.Names}} {{.Status}}' | grep '^done '; stat -c '%u %g' /root/note.txt; "
                           "docker exec keeper stat -c 'owned %u %g' /owned; cat /run/lab-motd")
    assert seen.ok, seen.output
    lines = seen.output.splitlines()
    assert lines[0] == "kept"
    assert "ourbox:v1" in lines and "alpine:latest" in lines
    assert "keeper" in lines and any(line.startswith("done Exited (0)") for line in lines)
    assert "0 0" in lines  # root's file is root's in the node, in its new uid range
    assert "owned 999 998" in lines  # and so are a container's files of other users
    assert "Your machine is back as you left it." in lines and "Running again: keeper." in lines
    # A fresh node next to it has an empty engine.
    fresh = nodes.sh(other, "docker image ls -q | wc -l; ls /root/note.txt 2>&1")
    assert fresh.output.splitlines()[0] == "0" and "No such file" in fresh.output


def test_a_damaged_save_or_one_from_another_node_image_is_refused(driver, nodes, store):
    node = nodes.start()
    asyncio.run(driver.save_and_stop(node.id, "u2/first-containers/node1"))
    path = store.fetch("u2/first-containers/node1")
    meta = json.loads((path / saves.META).read_text())
    (path / saves.META).write_text(json.dumps({**meta, "image": "node-0000000000000000"}))
    with pytest.raises(saves.SaveError, match="older node image; start fresh"):
        nodes.start(restore="u2/first-containers/node1")
    (path / saves.META).write_text(json.dumps(meta))
    data = (path / saves.DATA).read_bytes()
    (path / saves.DATA).write_bytes(data[: len(data) // 3])
    with pytest.raises(saves.SaveError, match="damaged"):
        nodes.start(restore="u2/first-containers/node1")
    with pytest.raises(saves.SaveError, match="no saved machine"):
        nodes.start(restore="u2/first-containers/node2")
    # Nothing of the refused starts is left behind.
    assert [n for n in driver.list_nodes() if n.session in nodes.sessions] == []
    assert subprocess.run(["losetup", "-j", str(path / saves.DATA)], capture_output=True,
                          text=True).stdout == ""


def test_a_save_over_the_limit_fails_cleanly_and_the_node_is_still_removed(driver, nodes, store):
    node = nodes.start()
    nodes.sh(node, "head -c 3000000 /dev/urandom > /root/noise")
    with pytest.raises(saves.SaveError, match="more than the"):
        asyncio.run(driver.save_and_stop(node.id, "u3/first-containers/node1", limit_bytes=2**20))
    assert not driver._node_dir(node.id).exists() and store.list() == []
    assert not list(store.root.glob("*/*/.*"))  # nothing half-written left in the store


def test_a_node_being_saved_is_not_reaped_as_dead(driver, nodes, store):
    """Its engine stops on purpose: beat's reap_dead, which runs every few
    seconds on a host, must leave it to the save (seen in the cluster test:
    the save lost its disk to the reaper)."""
    import threading
    node = nodes.start()
    nodes.sh(node, "echo kept > /root/note.txt")
    reaped, done = [], threading.Event()

    def reap():
        while not done.is_set():
            reaped.extend(driver.reap_dead())

    reaper = threading.Thread(target=reap)
    reaper.start()
    try:
        info = asyncio.run(driver.save_and_stop(node.id, "u4/first-containers/node1"))
    finally:
        done.set()
        reaper.join()
    assert node.id not in reaped and info.size > 0


def test_links_in_a_restored_machine_never_lead_the_hosts_writes_out(driver, nodes, store):
    """A restored machine's writable layer is the learner's. The host writes the
    node's hostname, hosts and the lesson's files into it at start: links the
    learner left there to host paths (absolute, which once resolved on the
    host) must not take those writes onto the host's files."""
    host_file = Path(f"/root/lab-restore-escape-{secrets.token_hex(4)}")
    host_dir = Path(f"/root/lab-restore-escape-dir-{secrets.token_hex(4)}")
    try:
        node = nodes.start()
        made = nodes.sh(node, f"rm -f /etc/hostname && ln -s {host_file} /etc/hostname && "
                              f"ln -s {host_dir} /root/app")
        assert made.ok, made.output
        asyncio.run(driver.save_and_stop(node.id, "u3/first-containers/node1"))
        back = nodes.start(session=node.session, restore="u3/first-containers/node1")
        assert not host_file.exists()
        # The node has its name in a plain file of its own, where the link was.
        assert nodes.sh(back, "test ! -L /etc/hostname && cat /etc/hostname").output.strip() \
            == "node1"
        asyncio.run(driver.save_and_stop(back.id, "u3/first-containers/node1"))
        # A lesson file under the linked directory: never on the host. (The
        # link leads nowhere inside the machine's own layer: the start says so.)
        with pytest.raises(LabRuntimeError, match="could not place /root/app/index.html"):
            asyncio.run(driver.start(NodeSpec(
                session=node.session, name="node1", restore="u3/first-containers/node1",
                files=[("/root/app/index.html", "<h1>hello</h1>")])))
        assert not host_dir.exists()
    finally:
        host_file.unlink(missing_ok=True)
        if host_dir.is_dir():
            shutil.rmtree(host_dir)


def test_saving_runs_none_of_the_nodes_programs_as_the_host(driver, nodes, store):
    """The save trims and freezes the node's disk. Done by running `fstrim`
    and `fsfreeze` in the node's mounts, those were the node's own files,
    which the learner can replace, run as the host's root. Replaced here by
    scripts that leave a mark: the mark must never be made."""
    node = nodes.start()
    made = nodes.sh(node, "for tool in fstrim fsfreeze; do "
                          "printf '#!/bin/sh\\necho ran > /var/lib/docker/ran-by-${0##*/}; sync\\n' "
                          "> /usr/sbin/$tool && chmod 755 /usr/sbin/$tool; done; "
                          "echo kept > /root/note.txt")
    assert made.ok, made.output
    asyncio.run(driver.save_and_stop(node.id, "u4/first-containers/node1"))
    back = nodes.start(session=node.session, restore="u4/first-containers/node1")
    seen = nodes.sh(back, "cat /root/note.txt; ls /var/lib/docker")
    assert "kept" in seen.output
    assert "ran-by" not in seen.output, seen.output
