"""The lab registry nodes reach is read-only; the lab's builds push through a
writer on the host's loopback, from a `docker save` archive (issue 9)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from runtime import imagepush, registry
from runtime.model import LabRuntimeError


def lines(text: str) -> list:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_the_registry_nodes_reach_listens_everywhere_and_takes_no_writes():
    config = lines(registry.config_text("standins", 5000, "/srv/reg"))
    assert 'addr: "0.0.0.0:5000"' in config
    readonly = config.index("readonly:")
    assert config[readonly + 1] == "enabled: true"
    delete = config.index("delete:")
    assert config[delete + 1] == "enabled: false"
    assert 'rootdirectory: "/srv/reg"' in config


def test_a_mirror_of_docker_hub_caches_what_it_serves_and_takes_no_deletes():
    config = lines(registry.config_text("mirror", 5000, "/srv/reg"))
    assert "remoteurl: https://registry-1.docker.io" in config
    assert config[config.index("readonly:") + 1] == "enabled: false"  # it writes its cache
    assert config[config.index("delete:") + 1] == "enabled: false"


def test_the_writer_listens_on_loopback_only_and_takes_pushes():
    config = lines(registry.config_text("standins", 41234, "/srv/reg", writer=True))
    assert 'addr: "127.0.0.1:41234"' in config
    readonly = config.index("readonly:")
    assert config[readonly + 1] == "enabled: false"
    delete = config.index("delete:")
    assert config[delete + 1] == "enabled: false"  # the lab never deletes either
    assert 'rootdirectory: "/srv/reg"' in config  # the same storage as the reader


def _tar_member(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _saved_image(tmp_path, layers: list, config: bytes, images: int = 1) -> str:
    """A tarball shaped like `docker save` output (manifest.json, config, layer.tar files)."""
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        names = []
        for i, layer in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            _tar_member(tar, names[-1], layer)
        _tar_member(tar, "abc.json", config)
        entry = {"Config": "abc.json", "RepoTags": ["x:latest"], "Layers": names}
        _tar_member(tar, "manifest.json", json.dumps([entry] * images).encode())
    return str(path)


def test_a_saved_image_becomes_its_config_and_gzipped_layers(tmp_path):
    config = b'{"rootfs": {"type": "layers"}, "config": {"Labels": {"lab.stand-in": "true"}}}'
    layers = [b"first layer tar bytes" * 100, b"second"]
    got_config, blobs = imagepush.read_archive(_saved_image(tmp_path, layers, config))
    assert got_config == config  # unchanged: the image keeps its ID and labels
    assert [gzip.decompress(b) for b in blobs] == layers
    # The same layer gives the same blob, so a rebuild re-uses what the registry has.
    assert imagepush.read_archive(_saved_image(tmp_path, layers, config))[1] == blobs


def test_the_manifest_names_the_config_and_every_layer_by_digest_and_size():
    config, blobs = b"{}", [b"one", b"three"]
    manifest = json.loads(imagepush.manifest_for(config, blobs))

    def sha(data):
        return "sha256:" + hashlib.sha256(data).hexdigest()

    assert manifest == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 2, "digest": sha(b"{}")},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3,
             "digest": sha(b"one")},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 5,
             "digest": sha(b"three")},
        ],
    }


def test_an_archive_that_is_not_one_saved_image_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(LabRuntimeError, match="is not a `docker save` archive"):
        imagepush.read_archive(str(junk))
    two = _saved_image(tmp_path, [b"x"], b"{}", images=2)
    with pytest.raises(LabRuntimeError, match="expected one image in the archive, found 2"):
        imagepush.read_archive(two)
