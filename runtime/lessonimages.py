"""Lesson images: stand-ins for Docker Hub images, built from Debian packages.

Lessons say `docker run alpine`, `docker run -d mysql`, `FROM nginx`. Where
Docker Hub is out of reach, the lab registry (runtime/registry.py) serves
stand-ins under the same names, and every node's dockerd pulls from it as
its registry mirror. No Docker engine is needed on the host:

1. each root filesystem is made on the host, in parallel: `mmdebstrap
   --variant=minbase` with the image's `packages` (and its `customize.sh`
   hook), or, for alpine, a tarball of Debian's static busybox and its applets;
   alpine's stand-in `apk` gets its package index resolved here too (below);
2. one builder node (session `imgbuild`) runs `docker build` on each recipe
   directory in runtime/lessonimages/<name>/ (`FROM scratch`, `ADD rootfs.tar /`)
   and `docker push`es the result to the lab registry as library/<name>:latest.

An image is rebuilt only when its recipe changed (a stamp file named after the
recipe's hash) or the registry lost it.

The alpine stand-in and `apk add`: the image stays BusyBox only (about 2 MB,
as small as the real alpine) until a lesson adds something. Its /sbin/apk is a
BusyBox shell script (alpine/apk) reading /etc/apk/lab-index, which this module
writes at build time: for each Alpine name in alpine/apk-packages, apt on the
host (with a private state directory and the host's apt sources) resolves the
Debian dependency closure of the listed Debian packages into .deb URLs on the
host's mirror, with SHA-256 and size. In a container, `apk add nodejs`
downloads those .debs in parallel with BusyBox wget and unpacks them with
BusyBox ar and tar (bookworm's data.tar.xz: BusyBox tar -J); glibc comes
with them. Rejected: carrying glibc or a Debian base in every alpine (tens of
MB that `docker run alpine hostname` never uses, and a different image from
the one lessons describe); an apk→apt-get shim in a minimal Debian (apt-get
update alone downloads ~9 MB of package lists per container and takes longer
than the install); serving pre-downloaded .debs from the lab registry host
(a second server for no gain: containers reach the Debian mirror). The index
is part of the recipe hash, so the image is rebuilt when the mirror moves on
(a pool file of a superseded version eventually disappears) and `images build`
runs again.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
import re
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import images, imagepush, registry
from .model import LabRuntimeError, NodeSpec
from .netplan import registry_host
from .paths import base_dir, file_lock

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
APK_PACKAGES = "apk-packages"  # in a busybox recipe: Alpine name -> Debian packages
APK_INDEX = "lab-index"        # written into the build context, /etc/apk/lab-index in the image
APT_TIMEOUT = 300
COPY_CHUNK = 32 << 20  # bytes per exec when copying a root filesystem into the builder


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


def image_ref(name: str) -> str:
    """The builder's tag for an image: its name in the lab registry as nodes reach it."""
    return f"{registry_host()}/library/{name}:latest"


def recipe_hash(recipe: Recipe, generated: str = "") -> str:
    """`generated`: what the build adds to the recipe directory (alpine's apk index)."""
    h = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, recipe.name, recipe.kind, *recipe.packages,
                 *DPKG_OPTIONS, json.dumps(labels(recipe.name), sort_keys=True),
                 *([generated] if generated else [])):
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


def busybox_rootfs(output) -> None:
    """A root filesystem of Debian's static busybox, applets as symlinks to it
    (what `busybox --install -s` makes), written as a tarball to `output` (a
    path or a binary file object)."""
    if not BUSYBOX.exists() or not _static(BUSYBOX):
        raise LabRuntimeError(f"the alpine stand-in needs a static {BUSYBOX}: "
                              "apt-get install busybox-static (or run `make run`)", permanent=True)
    applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    mtime = int(BUSYBOX.stat().st_mtime)
    dirs = {"bin": 0o755, "sbin": 0o755, "etc": 0o755, "usr": 0o755, "usr/bin": 0o755,
            "usr/sbin": 0o755, "usr/local": 0o755, "usr/local/bin": 0o755, "home": 0o755,
            "root": 0o700, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777, "var/log": 0o755,
            "proc": 0o755, "sys": 0o755, "dev": 0o755, "run": 0o755, "mnt": 0o755,
            # The stand-in apk's places, where Alpine keeps them.
            "etc/apk": 0o755, "lib": 0o755, "lib/apk": 0o755, "lib/apk/db": 0o755,
            "var/cache": 0o755, "var/cache/apk": 0o755}

    def entry(name: str, kind, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    where = {"fileobj": output} if hasattr(output, "write") else {"name": output}
    with tarfile.open(mode="w", format=tarfile.GNU_FORMAT, **where) as tar:
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


@dataclass(frozen=True)
class ApkPackage:
    """One line of alpine/apk-packages."""
    name: str           # the Alpine name lessons use: `apk add nodejs`
    debian: tuple       # the Debian packages standing in for it
    links: tuple = ()   # (path, target) symlinks a postinst would make


def apk_packages(path: Path) -> list:
    """Parse an apk-packages file; errors name the file and line."""
    found, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        where = f"{path}:{number}"
        name, debian, links = words[0], [], []
        for word in words[1:]:
            if word.startswith("/"):
                link, _, target = word.partition("=")
                if not target:
                    raise LabRuntimeError(f"{where}: {word!r} is not /path=target", permanent=True)
                links.append((link, target))
            else:
                debian.append(word)
        if not re.fullmatch(r"[a-z0-9][a-z0-9+._-]*", name):
            raise LabRuntimeError(f"{where}: {name!r} is not an apk package name", permanent=True)
        if name in seen:
            raise LabRuntimeError(f"{where}: {name} is listed twice", permanent=True)
        if not debian:
            raise LabRuntimeError(f"{where}: {name} names no Debian package", permanent=True)
        seen.add(name)
        found.append(ApkPackage(name, tuple(debian), tuple(links)))
    return found


def apk_index_text(resolved: list) -> str:
    """/etc/apk/lab-index from [(ApkPackage, [(url, sha256, size), ...]), ...] (pure).

    Plain lines a BusyBox awk reads: `suite S`, `pkg NAME DEBIAN...`,
    `deb NAME URL SHA256 SIZE` (the closure, in apt's unpack order) and
    `link NAME PATH TARGET`.
    """
    lines = ["# The lab's stand-in apk: Alpine package names -> Debian .debs (made by",
             "# runtime/lessonimages.py from runtime/lessonimages/alpine/apk-packages).",
             f"suite {SUITE}"]
    for package, debs in resolved:
        lines.append(" ".join(["pkg", package.name, *package.debian]))
        lines += [f"deb {package.name} {url} {sha} {size}" for url, sha, size in debs]
        lines += [f"link {package.name} {path} {target}" for path, target in package.links]
    return "\n".join(lines) + "\n"


def apt_dir() -> Path:
    return base_dir() / "apk-apt"


def apt_options(root: Path) -> list:
    """apt-get options for a private apt: the host's sources copied under
    root/sources.list.d, no installed packages (the alpine stand-in has no
    dpkg), its own lists, amd64 only. The host's apt.conf.d still applies."""
    return ["-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", f"Dir::Etc::PreferencesParts={root / 'preferences.d'}",
            "-o", f"Dir::State={root}", "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::State::status={root / 'status'}",
            "-o", f"Dir::Cache={root}", "-o", f"Dir::Cache::Archives={root / 'archives'}",
            "-o", f"Dir::Cache::pkgcache={root / 'pkgcache.bin'}",
            "-o", f"Dir::Cache::srcpkgcache={root / 'srcpkgcache.bin'}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures::=amd64", "-o", "Acquire::ForceHash=SHA256"]


PRINT_URI = re.compile(r"^'(?P<url>[^' ]+)' \S+ (?P<size>\d+) SHA256:(?P<sha>[0-9a-f]{64})$")


def parse_print_uris(output: str) -> list:
    """[(url, sha256, size)] from `apt-get --print-uris install` output (pure)."""
    debs = []
    for line in output.splitlines():
        if not line.strip():
            continue
        m = PRINT_URI.match(line.strip())
        if not m:
            raise LabRuntimeError(f"unexpected `apt-get --print-uris` line: {line!r}")
        debs.append((m["url"], m["sha"], int(m["size"])))
    return debs


def apk_index(recipe: Recipe, sources: list) -> str:
    """Resolve alpine's apk-packages against the host's mirror ("" for other recipes).

    Blocking (apt-get); runs under the build lock, which guards apt_dir().
    """
    listing = recipe.directory / APK_PACKAGES
    if recipe.kind != "busybox" or not listing.exists():
        return ""
    if not shutil.which("apt-get"):
        raise LabRuntimeError("apt-get is missing: alpine's apk index is resolved with apt "
                              "on a Debian host", permanent=True)
    packages = apk_packages(listing)
    root = apt_dir()
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "status").write_text("")
    for old in (root / "sources.list.d").iterdir():
        old.unlink()
    for i, source in enumerate(sources):
        suffix = ".sources" if source.endswith(".sources") else ".list"
        shutil.copyfile(source, root / "sources.list.d" / f"{i:02d}-{Path(source).stem}{suffix}")
    options = apt_options(root)
    began = time.monotonic()
    update = _apt(["apt-get", *options, "-q", "update"])
    have_lists = any((root / "lists").glob("*Packages*"))
    if update.returncode != 0 or "W: Failed" in update.stderr or "Err:" in update.stdout:
        if not have_lists:
            raise LabRuntimeError("apt-get update for alpine's apk index failed (is the Debian "
                                  "mirror in /etc/apt reachable?):\n" + update.stderr[-2000:])
        log.warning("alpine: apt-get update failed; resolving the apk index from the lists "
                    "of an earlier build:\n%s", update.stderr[-1000:])
    # Same lists (their Release files) and same apk-packages: same index as last time.
    key = hashlib.sha256(listing.read_bytes())
    for release in sorted((root / "lists").glob("*Release")):
        key.update(release.name.encode() + b"\0" + release.read_bytes())
    cached = root / f"index.{key.hexdigest()[:16]}"
    if cached.exists():
        log.info("alpine: apk index unchanged (mirror lists and apk-packages as before)")
        return cached.read_text()
    # Build apt's package cache once; the parallel resolvers below only read it.
    gencaches = _apt(["apt-cache", *options, "gencaches"])
    if gencaches.returncode != 0:
        raise LabRuntimeError("apt-cache gencaches failed:\n" + gencaches.stderr[-2000:])

    def resolve(package: ApkPackage) -> list:
        result = _apt(["apt-get", *options, "-qq", "--print-uris", "--no-install-recommends",
                       "install", *package.debian])
        if result.returncode != 0:
            raise LabRuntimeError(f"{listing}: apk {package.name}: apt cannot install "
                                  f"{' '.join(package.debian)}:\n{result.stderr[-1500:]}",
                                  permanent=True)
        return parse_print_uris(result.stdout)

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        closures = list(pool.map(resolve, packages))
    text = apk_index_text(list(zip(packages, closures)))
    for old in root.glob("index.*"):
        old.unlink()
    cached.write_text(text)
    log.info("alpine: apk index of %d packages (%d .deb URLs) resolved in %.1fs", len(packages),
             sum(len(c) for c in closures), time.monotonic() - began)
    return text


def _apt(argv: list) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=APT_TIMEOUT,
                              stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise LabRuntimeError(f"`{shlex.join(argv[:1] + argv[-3:])}` took longer than "
                              f"{APT_TIMEOUT}s") from None


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


def _build_lock():
    """One build at a time on this host (they share the builder node's name)."""
    return file_lock("lessonimages.lock")


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
            return await _build_missing(driver, force, stack)
        finally:
            await asyncio.to_thread(stack.close)


async def _build_missing(driver, force: bool, stack: contextlib.ExitStack) -> dict:
    todo, result = [], {}
    sources = images.host_apt_sources()
    for recipe in recipes():
        generated = await asyncio.to_thread(apk_index, recipe, sources)
        digest = recipe_hash(recipe, generated)
        if not force and await asyncio.to_thread(is_current, recipe, digest):
            log.info("%s: up to date in the lab registry (recipe %s)", recipe.name, digest)
            result[recipe.name] = "up to date"
        else:
            todo.append((recipe, digest, generated))
    if not todo:
        return result
    if any(r.kind == "debian" for r, _, _ in todo) and not shutil.which("mmdebstrap"):
        raise LabRuntimeError("mmdebstrap is missing: apt-get install mmdebstrap", permanent=True)
    began = time.monotonic()
    # A builder left behind by a build that crashed (the lock says none runs now).
    for node in driver.list_nodes():
        if node.session == BUILDER.session and node.name == BUILDER.name:
            log.info("removing builder node %s left by an earlier build", node.id)
            await driver.stop(node.id)
    # Pushes go through a writer on the host's loopback: the registry nodes
    # reach is read-only.
    writer = await asyncio.to_thread(stack.enter_context, registry.writer())
    node = await driver.start(BUILDER)
    try:
        outcomes = await asyncio.gather(
            *[_build_one(driver, node, recipe, digest, sources, writer, generated)
              for recipe, digest, generated in todo],
            return_exceptions=True)
    finally:
        await driver.stop(node.id)
    failed = []
    for (recipe, _, _), outcome in zip(todo, outcomes):
        if isinstance(outcome, BaseException):
            log.error("%s: %s", recipe.name, getattr(outcome, "reason", None) or repr(outcome))
            failed.append(recipe.name)
        else:
            result[recipe.name] = "built"
    if failed:
        raise LabRuntimeError(f"building lesson image(s) {', '.join(failed)} failed (see above)")
    log.info("lesson images built in %.1fs", time.monotonic() - began)
    return result


async def _build_one(driver, node, recipe: Recipe, digest: str, sources: list, writer: str,
                     generated: str = "") -> None:
    began = time.monotonic()
    context = f"/tmp/ctx-{recipe.name}"
    extra = {APK_INDEX: generated.encode()} if generated else {}
    if recipe.kind == "busybox":
        rootfs = io.BytesIO()  # about 2 MB
        await asyncio.to_thread(busybox_rootfs, rootfs)
        extra["rootfs.tar"] = rootfs.getvalue()
    tarball = await asyncio.to_thread(_context_tar, recipe, extra)
    await _in_node(driver, node, ["sh", "-c", 'rm -rf "$1" && mkdir -p "$1" && tar -xf - -C "$1"',
                                  "sh", context], f"{recipe.name}: placing the build context",
                   input=tarball)
    if recipe.kind != "busybox":
        with tempfile.TemporaryDirectory(dir=base_dir()) as tmp:
            await _mmdebstrap(recipe, Path(tmp) / "rootfs.tar", sources)
            await _copy_into(driver, node, Path(tmp) / "rootfs.tar", f"{context}/rootfs.tar")
    rootfs_seconds = time.monotonic() - began

    ref = image_ref(recipe.name)
    label_args = [a for k, v in labels(recipe.name).items() for a in ("--label", f"{k}={v}")]
    await _in_node(driver, node, ["env", "DOCKER_BUILDKIT=0", "docker", "build", "--quiet",
                                  *label_args, "--tag", ref, context], f"{recipe.name}: docker build")
    await _push(driver, node, ref, recipe.repository, writer)
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


def _context_tar(recipe: Recipe, extra: dict) -> bytes:
    """The recipe directory plus `extra` ({file name: bytes}) as a tarball."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(recipe.directory, arcname=".")  # modes kept: COPY takes them
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _copy_into(driver, node, source: Path, target: str) -> None:
    """A host file into the node, through the driver's exec (the node may live
    in its own user namespace, where the host's root owns nothing), in chunks
    so a 300 MB root filesystem never sits in memory whole."""
    await _in_node(driver, node, ["sh", "-c", ': > "$1"', "sh", target], f"creating {target}")
    with open(source, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, COPY_CHUNK):
            await _in_node(driver, node, ["sh", "-c", 'cat >> "$1"', "sh", target],
                           f"copying into {target}", input=chunk)


async def _push(driver, node, ref: str, repository: str, writer: str) -> None:
    """`docker save` in the builder, the archive out to the host through the
    driver's exec, and from there into the registry writer (`writer`, a base URL)."""
    archive = f"/tmp/save-{repository.replace('/', '-')}.tar"
    await _in_node(driver, node, ["docker", "save", "--output", archive, ref],
                   f"{repository}: docker save")
    with tempfile.NamedTemporaryFile(dir=base_dir(), suffix=".tar") as local:
        await _copy_out(driver, node, archive, local)
        await asyncio.to_thread(imagepush.push_archive, local.name, writer, repository)
    await _in_node(driver, node, ["rm", "-f", archive], "cleaning up")


async def _copy_out(driver, node, source: str, target) -> None:
    """A node file onto the open host file `target`, in chunks through the
    driver's exec (bytes as they come, so the binary file is never decoded)."""
    for index in itertools.count():
        before = target.tell()
        await _in_node(driver, node, ["dd", f"if={source}", f"bs={COPY_CHUNK}", f"skip={index}",
                                      "count=1", "status=none"],
                       f"copying {source} out", on_output=target.write)
        if target.tell() - before < COPY_CHUNK:
            break
    target.flush()


async def _mmdebstrap(recipe: Recipe, output: Path, sources: list) -> None:
    # mmdebstrap writes the tarball to stdout, redirected to a host file.
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


async def _in_node(driver, node, argv: list, what: str, input: bytes | None = None,
                   on_output=None) -> str:
    result = await driver.exec(node.id, argv, timeout=BUILD_TIMEOUT, input=input,
                               on_output=on_output)
    if not result.ok:
        raise LabRuntimeError(f"{what} failed (exit {result.exit_code}"
                              f"{', timed out' if result.timed_out else ''}):\n{result.output[-3000:]}")
    return result.output
