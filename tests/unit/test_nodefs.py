"""runtime/nodefs.py: the host opens a node's files as the node resolves them,
and never outside the node's root, whatever links the learner made there."""
import os
import socket
import stat

import pytest

from runtime import nodefs


@pytest.fixture
def root(tmp_path):
    """A node's root (tmp_path/root) and a host file outside it (tmp_path/host-file)."""
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "run").mkdir()
    (tmp_path / "host-file").write_text("the host's own\n")
    return tmp_path / "root"


def test_a_link_to_a_host_file_is_not_written_through(root, tmp_path):
    host_file = tmp_path / "host-file"
    (root / "etc" / "hosts").symlink_to(host_file)  # absolute: the host's path
    with pytest.raises(OSError):
        nodefs.write_in_root(str(root), "/etc/hosts", b"10.0.0.2 node2\n")
    assert host_file.read_text() == "the host's own\n"
    # Without the guard the same write lands on the host's file: the test can fail.
    (root / "etc" / "hosts").write_text("10.0.0.2 node2\n")
    assert host_file.read_text() == "10.0.0.2 node2\n"


def test_absolute_links_on_the_way_resolve_inside_the_node(root, tmp_path):
    # As in a real node: /var/run -> /run (absolute), and /etc -> a directory
    # given by an absolute link the learner made: both stay in the node's root.
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")
    (root / "run" / "motd").write_text("in the node\n")
    assert nodefs.read_in_root(str(root), "/var/run/motd") == b"in the node\n"
    (root / "escape").symlink_to("/../../../" + str(tmp_path).lstrip("/"))
    with pytest.raises(OSError):
        nodefs.read_in_root(str(root), "/escape/host-file")


def test_a_file_must_be_of_the_kind_asked_for(root):
    (root / "run" / "pipe").write_text("a regular file, not a FIFO")
    with pytest.raises(OSError, match="not a fifo"):
        nodefs.open_in_root(str(root), "/run/pipe", os.O_RDONLY | os.O_NONBLOCK, kind="fifo")
    os.mkfifo(root / "run" / "fifo")
    fd = nodefs.open_in_root(str(root), "/run/fifo", os.O_RDONLY | os.O_NONBLOCK, kind="fifo")
    os.close(fd)


def test_a_socket_in_the_node_is_connected_to_through_its_descriptor(root):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "run" / "engine.sock"))
    server.listen(1)
    fd = nodefs.open_in_root(str(root), "/run/engine.sock", kind="socket")
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(f"/proc/self/fd/{fd}")
            peer, _ = server.accept()
            client.sendall(b"ping")
            assert peer.recv(4) == b"ping"
            peer.close()
    finally:
        os.close(fd)
        server.close()


def test_read_gives_the_tail(root):
    (root / "run" / "log").write_bytes(b"x" * 5000 + b"the end")
    assert nodefs.read_in_root(str(root), "/run/log", tail=7) == b"the end"


def test_place_makes_directories_and_replaces_a_link_instead_of_following_it(root, tmp_path):
    host_file = tmp_path / "host-file"
    (root / "etc" / "hostname").symlink_to(host_file)
    nodefs.place(str(root), "/etc/hostname", b"node1\n")
    assert host_file.read_text() == "the host's own\n"
    assert not (root / "etc" / "hostname").is_symlink()
    assert (root / "etc" / "hostname").read_bytes() == b"node1\n"
    nodefs.place(str(root), "/root/app/run.sh", b"echo hi\n", 0o755)
    assert (root / "root" / "app" / "run.sh").stat().st_mode & 0o777 == 0o755


def test_place_never_writes_through_a_linked_directory(root, tmp_path):
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (root / "app").symlink_to(host_dir)  # absolute: the host's path
    with pytest.raises(OSError):
        nodefs.place(str(root), "/app/index.html", b"<h1>hi</h1>")
    assert list(host_dir.iterdir()) == []
    # A link that stays in the layer is followed, as the node would.
    (root / "site").mkdir()
    (root / "www").symlink_to("/site")
    nodefs.place(str(root), "/www/index.html", b"<h1>hi</h1>")
    assert (root / "site" / "index.html").read_bytes() == b"<h1>hi</h1>"


def test_make_fifo_replaces_what_was_there_and_never_leaves_the_node(root, tmp_path):
    fifo = root / "run" / "rec.fifo"
    # A link the learner left where the FIFO goes: replaced, not followed.
    fifo.symlink_to(tmp_path / "host-file")
    nodefs.make_fifo(str(root), "/run/rec.fifo", owner=os.getuid())
    st = os.lstat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert (tmp_path / "host-file").read_text() == "the host's own\n"
    # A FIFO there already (the recorder attaching again), or a file: a FIFO.
    nodefs.make_fifo(str(root), "/run/rec.fifo", owner=os.getuid())
    fifo.unlink()
    fifo.write_text("a file the learner made")
    nodefs.make_fifo(str(root), "/run/rec.fifo", owner=os.getuid())
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # Its directory given by an absolute link: resolved inside the node's root.
    (root / "inner").symlink_to("/run")
    nodefs.make_fifo(str(root), "/inner/other.fifo", owner=os.getuid())
    assert stat.S_ISFIFO(os.lstat(root / "run" / "other.fifo").st_mode)
    (root / "outside").symlink_to("/" + str(tmp_path).lstrip("/"))
    with pytest.raises(OSError):
        nodefs.make_fifo(str(root), "/outside/made-on-the-host.fifo")
    assert not (tmp_path / "made-on-the-host.fifo").exists()


def test_make_fifo_makes_it_as_its_owner_and_leaves_this_thread_root(root):
    (root / "run").chmod(0o777)
    nodefs.make_fifo(str(root), "/run/rec.fifo", owner=65534)
    st = os.lstat(root / "run" / "rec.fifo")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    # This thread makes files as root again: one in a directory only root may write.
    (root / "run").chmod(0o755)
    (root / "run" / "after").write_text("made by root")
    assert os.lstat(root / "run" / "after").st_uid == 0
    assert stat.S_ISFIFO(st.st_mode)
