"""Push an image saved by `docker save` into a registry, over the registry's v2 API.

The lab's image builds do not `docker push` from the builder node: the
registry nodes pull from is read-only (a learner could otherwise replace or
delete every learner's images), and the writable one listens on the host's
loopback only, where no node reaches. So the host reads the builder's
`docker save` archive and pushes it itself: each layer gzipped as Docker
pushes it, the image config as is, then a schema 2 manifest. The image keeps
its ID (the config's digest), labels and layers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import urllib.error
import urllib.parse
import urllib.request

from . import registry
from .model import LabRuntimeError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# The writer is on loopback: never through a proxy from the environment.


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_for(config: bytes, layers: list) -> bytes:
    """The schema 2 manifest of an image config and its gzipped layer blobs (pure)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": digest_of(config)},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(blob), "digest": digest_of(blob)}
                   for blob in layers],
    }, indent=3).encode()


def read_archive(path: str) -> tuple:
    """(config bytes, [gzipped layer blobs]) of the one image in a `docker save` tarball."""
    try:
        with tarfile.open(path) as tar:
            entries = json.load(tar.extractfile("manifest.json"))
            if len(entries) != 1:
                raise LabRuntimeError(f"{path}: expected one image in the archive, "
                                      f"found {len(entries)}")
            config = tar.extractfile(entries[0]["Config"]).read()
            # mtime=0: the same layer gives the same blob, so a rebuild re-uses it.
            layers = [gzip.compress(tar.extractfile(name).read(), compresslevel=6, mtime=0)
                      for name in entries[0]["Layers"]]
    except (tarfile.TarError, KeyError, ValueError, AttributeError) as e:
        raise LabRuntimeError(f"{path} is not a `docker save` archive: {e}") from None
    return config, layers


def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with registry.opener.open(request, timeout=120) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as e:
        if method == "HEAD" and e.code == 404:
            return 404, e.headers
        body = e.read()[:500].decode(errors="replace")
        raise LabRuntimeError(f"registry: {method} {url} answered {e.code}: {body}") from None
    except OSError as e:
        raise LabRuntimeError(f"registry: {method} {url} failed: {e}") from None


def _push_blob(base: str, repository: str, blob: bytes) -> None:
    digest = digest_of(blob)
    status, _ = _request("HEAD", f"{base}/v2/{repository}/blobs/{digest}")
    if status == 200:
        return  # the registry has it already (a layer shared with another image)
    _, headers = _request("POST", f"{base}/v2/{repository}/blobs/uploads/")
    location = urllib.parse.urljoin(base + "/", headers["Location"])
    sep = "&" if "?" in location else "?"
    _request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", data=blob,
             headers={"Content-Type": "application/octet-stream"})


def push_archive(path: str, base: str, repository: str, tag: str = "latest") -> str:
    """Push the image in the `docker save` tarball `path` to the registry at
    `base` (http://host:port) as repository:tag; returns the manifest digest."""
    config, layers = read_archive(path)
    for blob in [*layers, config]:
        _push_blob(base, repository, blob)
    manifest = manifest_for(config, layers)
    _request("PUT", f"{base}/v2/{repository}/manifests/{tag}", data=manifest,
             headers={"Content-Type": MANIFEST_V2})
    return digest_of(manifest)
