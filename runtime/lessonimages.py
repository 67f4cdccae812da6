"""Lesson images: stand-ins for Docker Hub images, built from Debian packages.

Lessons say `docker run alpine`, `docker run -d mysql`, `FROM nginx`. Where
Docker Hub is out of reach, the lab registry (runtime/registry.py) serves
stand-ins under the same names, and every node's dockerd pulls from it as
its registry mirror. No Docker engine is needed on the host:

1. each root filesystem is made on the host, in parallel: `mmdebstrap
   --variant=minbase` with the image's `packages` (and its `customize.sh`
   hook), or, for alpine, a tarball of Debian's static busybox and its applets;
2. one builder node (session `imgbuild`) runs `docker build` on each recipe
   directory in runtime/lessonimages/<name>/ (`FROM scratch`, `ADD rootfs.tar /`)
   and `docker push`es the result to the lab registry as library/<name>:latest.

An image is rebuilt only when its recipe changed (a stamp file named after the
recipe's hash) or the registry lost it.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import shlex
import shutil
import struct
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import images, registry
from .model import LabRuntimeError, NodeSpec
from .netplan import registry_port
from .paths import base_dir

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).with_name("lessonimages")
# Build order matters little (builds run in parallel); it is the log's order.
NAMES = ("alpine", "ubuntu", "mysql", "nginx")
BUSYBOX = Path("/bin/busybox")
BUILDER = NodeSpec(session="imgbuild", name="builder")
SUITE = images.SUITE
DPKG_OPTIONS = (
    # Images carry no documentation, manual pages or translations; copyright
    # notices stay. mmdebstrap keeps these in /etc/dpkg/dpkg.cfg.d/, so the
    # same holds for packages installed later inside containers.
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/lintian/*",
)
# Changing how images are put together (this file) must change every hash.
RECIPE_VERSION = "1"
ROOTFS_TIMEOUT = 900
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class Recipe:
    name: str
    directory: Path
    kind: str  # "debian" (mmdebstrap + packages) or "busybox"
    packages: tuple = ()

    @property
    def repository(self) -> str:
        return f"library/{self.name}"


def recipes() -> list:
    found = []
    for name in NAMES:
        directory = RECIPES_DIR / name
        packages_file = directory / "packages"
        if packages_file.exists():
            packages = tuple(line.split("#")[0].strip() for line in
                             packages_file.read_text().splitlines() if line.split("#")[0].strip())
            found.append(Recipe(name, directory, "debian", packages))
        else:
            found.append(Recipe(name, directory, "busybox"))
    return found


def labels(name: str) -> dict:
    """What `docker image inspect` shows about a stand-in."""
    return {
        "org.opencontainers.image.description":
            f"Lab stand-in for the Docker Hub image {name}, built from Debian packages "
            f"(not the official image)",
        "lab.stand-in": "true",
        "lab.stand-in.for": name,
    }


def image_ref(gateway: str, name: str) -> str:
    """Where the builder pushes: the lab registry as the builder node reaches it."""
    return f"{gateway}:{registry_port()}/library/{name}:latest"


def recipe_hash(recipe: Recipe) -> str:
    h = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, recipe.name, recipe.kind, *recipe.packages,
                 *DPKG_OPTIONS, json.dumps(labels(recipe.name), sort_keys=True)):
        h.update(part.encode() + b"\0")
    for path in sorted(p for p in recipe.directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(recipe.directory)).encode() + b"\0")
        h.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        h.update(path.read_bytes())
    if recipe.kind == "busybox" and BUSYBOX.exists():
        h.update(BUSYBOX.read_bytes())
    return h.hexdigest()[:16]


def stamps_dir() -> Path:
    return base_dir() / "registry-stamps"


def stamp_path(recipe: Recipe, digest: str) -> Path:
    return stamps_dir() / f"{recipe.name}.{digest}"


def is_current(recipe: Recipe, digest: str) -> bool:
    """Built from this recipe and still in the registry?"""
    return stamp_path(recipe, digest).exists() and registry.has_image(recipe.repository)


def mmdebstrap_argv(recipe: Recipe, output: str, sources: list) -> list:
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            "--skip=output/dev"]  # docker makes /dev for every container
    if recipe.packages:
        argv.append("--include=" + ",".join(recipe.packages))
    argv += [f"--dpkgopt={opt}" for opt in DPKG_OPTIONS]
    hook = recipe.directory / "customize.sh"
    if hook.exists():
        argv.append(f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\"")
    return [*argv, SUITE, output, *sources]


def busybox_rootfs(output: Path) -> None:
    """A root filesystem of Debian's static busybox, applets as symlinks to it
    (what `busybox --install -s` makes), written as a tarball."""
    if not BUSYBOX.exists() or not _static(BUSYBOX):
        raise LabRuntimeError(f"the alpine stand-in needs a static {BUSYBOX}: "
                              "apt-get install busybox-static (or run `make run`)", permanent=True)
    applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    mtime = int(BUSYBOX.stat().st_mtime)
    dirs = {"bin": 0o755, "sbin": 0o755, "etc": 0o755, "usr": 0o755, "usr/bin": 0o755,
            "usr/sbin": 0o755, "usr/local": 0o755, "usr/local/bin": 0o755, "home": 0o755,
            "root": 0o700, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777, "var/log": 0o755,
            "proc": 0o755, "sys": 0o755, "dev": 0o755, "run": 0o755, "mnt": 0o755}

    def entry(name: str, kind, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(output, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(entry(name, tarfile.DIRTYPE, dirs[name]))
        info = entry("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = BUSYBOX.stat().st_size
        with open(BUSYBOX, "rb") as f:
            tar.addfile(info, f)
        for path in sorted(set(applets)):
            if path == "bin/busybox" or path.rsplit("/", 1)[0] not in dirs:
                continue
            link = entry(path, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)


def _static(path: Path) -> bool:
    """An ELF file without a program interpreter (PT_INTERP) is statically linked."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


@contextlib.contextmanager
def _build_lock():
    """One build at a time on this host (they share the builder node's name)."""
    path = base_dir() / "lessonimages.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


async def build_all(driver, force: bool = False) -> dict:
    """Make sure the lab registry holds every lesson image; returns {name: what happened}.

    Uses the running lab registry or starts a temporary one for the build.
    """
    if registry.mode() == "mirror":
        # A pull-through cache refuses pushes; Docker Hub itself has the images.
        if await asyncio.to_thread(registry.answers):
            log.info("lab registry mirrors Docker Hub at %s: no stand-ins needed", registry.url())
        else:
            log.warning("lab registry (mirror mode) does not answer at %s: start it with "
                        "`python -m runtime registry serve`", registry.url())
        return {}
    with contextlib.ExitStack() as stack:
        await asyncio.to_thread(stack.enter_context, _build_lock())
        await asyncio.to_thread(stack.enter_context, registry.ensure_running())
        try:
            return await _build_missing(driver, force)
        finally:
            await asyncio.to_thread(stack.close)


async def _build_missing(driver, force: bool) -> dict:
    todo, result = [], {}
    for recipe in recipes():
        digest = recipe_hash(recipe)
        if not force and await asyncio.to_thread(is_current, recipe, digest):
            log.info("%s: up to date in the lab registry (recipe %s)", recipe.name, digest)
            result[recipe.name] = "up to date"
        else:
            todo.append((recipe, digest))
    if not todo:
        return result
    if any(r.kind == "debian" for r, _ in todo) and not shutil.which("mmdebstrap"):
        raise LabRuntimeError("mmdebstrap is missing: apt-get install mmdebstrap", permanent=True)
    sources = images.host_apt_sources()
    began = time.monotonic()
    # A builder left behind by a build that crashed (the lock says none runs now).
    for node in driver.list_nodes():
        if node.session == BUILDER.session and node.name == BUILDER.name:
            log.info("removing builder node %s left by an earlier build", node.id)
            await driver.stop(node.id)
    node = await driver.start(BUILDER)
    try:
        outcomes = await asyncio.gather(
            *[_build_one(driver, node, recipe, digest, sources) for recipe, digest in todo],
            return_exceptions=True)
    finally:
        await driver.stop(node.id)
    failed = []
    for (recipe, _), outcome in zip(todo, outcomes):
        if isinstance(outcome, BaseException):
            log.error("%s: %s", recipe.name, getattr(outcome, "reason", None) or repr(outcome))
            failed.append(recipe.name)
        else:
            result[recipe.name] = "built"
    if failed:
        raise LabRuntimeError(f"building lesson image(s) {', '.join(failed)} failed (see above)")
    log.info("lesson images built in %.1fs", time.monotonic() - began)
    return result


async def _build_one(driver, node, recipe: Recipe, digest: str, sources: list) -> None:
    began = time.monotonic()
    context = f"/tmp/ctx-{recipe.name}"
    host_context = Path(f"/proc/{node.extra['pid']}/root") / context.lstrip("/")
    await asyncio.to_thread(_copy_recipe, recipe, host_context)
    rootfs = host_context / "rootfs.tar"
    if recipe.kind == "busybox":
        await asyncio.to_thread(busybox_rootfs, rootfs)
    else:
        await _mmdebstrap(recipe, rootfs, sources)
    rootfs_seconds = time.monotonic() - began

    ref = image_ref(node.extra["gateway"], recipe.name)
    label_args = [a for k, v in labels(recipe.name).items() for a in ("--label", f"{k}={v}")]
    await _in_node(driver, node, ["env", "DOCKER_BUILDKIT=0", "docker", "build", "--quiet",
                                  *label_args, "--tag", ref, context], f"{recipe.name}: docker build")
    await _in_node(driver, node, ["docker", "push", ref], f"{recipe.name}: docker push")
    size = (await _in_node(driver, node, ["docker", "image", "inspect", "--format",
                                          "{{.Size}}", ref], "docker image inspect")).strip()
    await _in_node(driver, node, ["rm", "-rf", context], "cleaning up")

    stamps_dir().mkdir(parents=True, exist_ok=True)
    for old in stamps_dir().glob(f"{recipe.name}.*"):
        old.unlink()
    seconds = time.monotonic() - began
    stamp_path(recipe, digest).write_text(json.dumps(
        {"image": recipe.repository, "recipe": digest, "size": int(size or 0),
         "seconds": round(seconds, 1), "built": time.time()}) + "\n")
    log.info("%s: built and pushed library/%s:latest in %.1fs (root filesystem %.1fs), %.0f MB",
             recipe.name, recipe.name, seconds, rootfs_seconds, int(size or 0) / 1e6)


def _copy_recipe(recipe: Recipe, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(recipe.directory, target)


async def _mmdebstrap(recipe: Recipe, output: Path, sources: list) -> None:
    # mmdebstrap resolves its target path, which turns /proc/PID/root/... into
    # a host path: it writes the tarball to stdout, redirected into the node.
    argv = mmdebstrap_argv(recipe, "-", sources)
    log.debug("%s: %s > %s", recipe.name, shlex.join(argv), output)
    with open(output, "wb") as tarball:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                    stdout=tarball, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), ROOTFS_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise LabRuntimeError(f"mmdebstrap took longer than {ROOTFS_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise LabRuntimeError("mmdebstrap failed (is the Debian mirror in /etc/apt "
                              "reachable?):\n" + err.decode(errors="replace")[-3000:])


async def _in_node(driver, node, argv: list, what: str) -> str:
    result = await driver.exec(node.id, argv, timeout=BUILD_TIMEOUT)
    if not result.ok:
        raise LabRuntimeError(f"{what} failed (exit {result.exit_code}"
                              f"{', timed out' if result.timed_out else ''}):\n{result.output[-3000:]}")
    return result.output
