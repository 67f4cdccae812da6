"""Saved machines' format and store (runtime/saves.py), on files: the node
side is tests/integration/test_saves.py."""
import json
import os

import pytest

from runtime import saves


@pytest.fixture
def store(tmp_path):
    return saves.DirectoryStore(tmp_path / "saves")


def sparse_disk(directory, size=1 << 30, data=b"lab" * 1000, at=5 << 20):
    directory.mkdir(parents=True, exist_ok=True)
    disk = directory / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(size)
        f.seek(at)
        f.write(data)
    return disk


def test_a_save_packs_only_what_the_sparse_disk_holds_and_unpacks_the_same(store, tmp_path):
    disk = sparse_disk(tmp_path / "node")
    staging = store.staging("u1/first-containers/node1")
    size = saves.pack(disk, staging, {"node": "node1", "image": "node-abc", "disk": "disk.img",
                                      "uid_base": 10_000_000, "running": [["f00", "mydb"]]})
    info = store.put("u1/first-containers/node1", staging)
    assert size < info.size < 100_000  # a 1 GB disk holding 3 KB (and its meta.json)
    assert not staging.exists()
    restored = tmp_path / "again"
    meta = saves.unpack(store.fetch("u1/first-containers/node1"), restored)
    assert meta["running"] == [["f00", "mydb"]] and meta["format"] == saves.FORMAT
    copy = restored / "disk.img"
    assert copy.stat().st_size == 1 << 30
    assert copy.stat().st_blocks * 512 < 1 << 20  # still sparse
    with open(copy, "rb") as f:
        f.seek(5 << 20)
        assert f.read(3000) == b"lab" * 1000


def test_saves_are_listed_by_owner_and_deleted(store, tmp_path):
    for key in ("u1/first-containers/node1", "u1/swarm/node2", "u2/swarm/node1"):
        staging = store.staging(key)
        saves.pack(sparse_disk(tmp_path / key.replace("/", "_")), staging, {"image": "i"})
        store.put(key, staging)
    assert [s.key for s in store.list("u1/")] == ["u1/first-containers/node1", "u1/swarm/node2"]
    assert store.usage("u1") == sum(s.size for s in store.list("u1/"))
    assert store.delete("u1/swarm/node2") and not store.delete("u1/swarm/node2")
    assert [s.key for s in store.list()] == ["u1/first-containers/node1", "u2/swarm/node1"]


def test_a_save_over_the_learners_space_is_refused_and_nothing_is_kept(store, tmp_path):
    disk = sparse_disk(tmp_path / "node", data=os.urandom(200_000))
    staging = store.staging("u1/first-containers/node1")
    with pytest.raises(saves.SaveError) as e:
        saves.pack(disk, staging, {"image": "i"}, limit_bytes=50_000)
    assert "more than the 0 MB left of your space for saved machines" in e.value.reason
    assert store.list() == []


def test_a_save_cut_short_is_never_listed_nor_fetched(store, tmp_path):
    staging = store.staging("u1/first-containers/node1")
    (staging / saves.DATA).write_bytes(b"half a save")
    assert store.list() == []
    with pytest.raises(saves.SaveError, match="no saved machine"):
        store.fetch("u1/first-containers/node1")
    os.utime(staging, (0, 0))
    assert store.discard_partial() == [str(staging)] and not staging.exists()


def test_a_damaged_or_foreign_save_is_refused_with_a_reason(store, tmp_path):
    staging = store.staging("u1/first-containers/node1")
    saves.pack(sparse_disk(tmp_path / "node"), staging, {"image": "i", "disk": "disk.img"})
    path = store.put("u1/first-containers/node1", staging) and store.fetch("u1/first-containers/node1")
    data = (path / saves.DATA).read_bytes()
    (path / saves.DATA).write_bytes(data[: len(data) // 2])
    with pytest.raises(saves.SaveError, match="damaged .* start fresh"):
        saves.unpack(path, tmp_path / "a")
    meta = json.loads((path / saves.META).read_text())
    (path / saves.META).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(saves.SaveError, match="another version of the lab"):
        saves.unpack(path, tmp_path / "b")
    (path / saves.META).write_text("{")
    with pytest.raises(saves.SaveError, match="damaged"):
        saves.unpack(path, tmp_path / "c")


def test_keys_cannot_leave_the_store():
    for key in ("../x/y", "u1/../node1", "u1/lesson", "u1/a/b/c", "/u1/a/b", "u1/a/.b"):
        with pytest.raises(ValueError):
            saves.check_key(key)


def test_owners_move_to_the_new_nodes_range_and_host_root_files_to_its_root(tmp_path):
    old, new, span = 10_000_000, 10_065_536, 65_536
    root = tmp_path / "upper"
    (root / "etc").mkdir(parents=True)
    mine = root / "etc" / "mysql.cnf"
    mine.write_text("x")
    setuid = root / "ping"
    setuid.write_text("x")
    written = root / "etc" / "hosts"  # written by the host for the new node
    written.write_text("x")
    os.lchown(root, old, old)
    os.lchown(root / "etc", old, old)
    os.lchown(mine, old + 999, old + 999)
    os.lchown(setuid, old, old)
    os.chmod(setuid, 0o4755)
    os.symlink("etc/mysql.cnf", root / "link")
    os.lchown(root / "link", old + 5, old + 5)
    changed = saves.shift_owners(root, old, new, span, root_to=new)
    assert changed == 6
    assert (mine.stat().st_uid, mine.stat().st_gid) == (new + 999, new + 999)
    assert written.stat().st_uid == new and os.lstat(root / "link").st_uid == new + 5
    assert setuid.stat().st_mode & 0o7777 == 0o4755 and setuid.stat().st_uid == new
