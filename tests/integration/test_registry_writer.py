"""The lab's builds push through the registry writer (issue 9): an image made in
a node leaves it as a `docker save` archive, the host pushes it into the writer
on its loopback, and another node pulls it from the read-only registry."""
from __future__ import annotations

import asyncio
import json
import secrets
import shutil

from runtime import lessonimages, registry
from runtime.netplan import registry_host


def _remove_from_storage(repository: str, manifest: dict) -> None:
    """Deletes are off in both registry processes: the test removes its image
    from the storage itself (a FROM-scratch image shares no blob with others)."""
    root = registry.storage_dir() / "docker" / "registry" / "v2"
    shutil.rmtree(root / "repositories" / repository.split("/")[0], ignore_errors=True)
    for blob in [manifest["config"], *manifest["layers"]]:
        hexdigest = blob["digest"].split(":", 1)[1]
        shutil.rmtree(root / "blobs" / "sha256" / hexdigest[:2] / hexdigest, ignore_errors=True)


def test_an_image_from_a_node_reaches_other_nodes_through_the_writer(nodes, driver,
                                                                     lab_registry):
    token = secrets.token_hex(4)
    repository = f"labtest{token}/hello"
    ref = f"{registry_host()}/{repository}:latest"
    builder = nodes.start()
    build = nodes.sh(builder, f"""set -e
        mkdir -p /tmp/ctx && cd /tmp/ctx
        echo 'made in a node {token}' > hello
        printf 'FROM scratch\\nCOPY hello /hello\\nLABEL lab.test={token}\\n' > Dockerfile
        DOCKER_BUILDKIT=0 docker build -q -t {ref} .""", timeout=120)
    assert build.exit_code == 0, build.output
    manifest = None
    try:
        with registry.writer() as writer:
            asyncio.run(lessonimages._push(driver, builder, ref, repository, writer))
            manifest = json.loads(_get(f"{writer}/v2/{repository}/manifests/latest"))
        assert registry.has_image(repository)  # the read-only registry serves it

        reader = nodes.start()
        out = nodes.sh(reader, f"""set -e
            docker pull -q {ref} >/dev/null
            docker image inspect --format '{{{{index .Config.Labels "lab.test"}}}}' {ref}
            docker create --name probe {ref} /none >/dev/null
            docker cp probe:/hello - | tar -xO""", timeout=120)
        assert out.exit_code == 0, out.output
        assert out.output.split("\n")[:2] == [token, f"made in a node {token}"], out.output
        # The archive left the builder's disk.
        assert nodes.sh(builder, "ls /tmp/save-* 2>/dev/null | wc -l").output.strip() == "0"
    finally:
        if manifest is not None:
            _remove_from_storage(repository, manifest)


def _get(url: str) -> bytes:
    import urllib.request
    request = urllib.request.Request(url, headers={"Accept": registry.MANIFEST_TYPES})
    with registry.opener.open(request) as r:
        return r.read()
