"""/static/ served by the web process from memory.

A class arriving at once is forty fresh browsers, each loading the lesson
page's scripts and styles (six files). Django's static handler cost about 7 ms
of the web process's CPU per file (a request object, a hop to a thread, the
file read again each time): some 40 ms per learner before their page could
even open its sockets. Here a file is read once (again only when it changes
on disk), kept with its gzip form, and sent as one message: 2.5-3 ms, which
is about what any request costs Daphne.

The lesson page's scripts and its styles are each one file, a bundle
(BUNDLES): the files joined in order, rebuilt when one of them changes. Six
requests a learner became three (with the hand icon), and each costs Daphne
about as much as a small page.

Found where Django's finders find them (the static dirs and the apps'), so no
collectstatic is needed. Each response carries an ETag and `Cache-Control:
no-cache`: a browser asks again on each page load and gets a 304 while the
file is unchanged, so a new version of the site's scripts is never run
against an old page.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import mimetypes
import os
import posixpath
import re
from dataclasses import dataclass
from email.utils import formatdate

from django.contrib.staticfiles import finders

log = logging.getLogger(__name__)

COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")

# A bundle's path -> its files, in the order they run. (Relative url()s in a
# stylesheet still resolve: bundles/ sits beside labs/ and vendor/.)
BUNDLES = {
    "bundles/lesson.js": ("vendor/xterm/xterm.js", "vendor/xterm/addon-fit.js", "labs/lesson.js"),
    "bundles/lesson.css": ("labs/site.css", "vendor/xterm/xterm.css"),
}
# A source map comment names a file beside the original; in a bundle it would not be.
SOURCE_MAP = re.compile(rb"^//# sourceMappingURL=.*$", re.MULTILINE)


@dataclass
class _File:
    path: str | tuple  # a bundle: its files'
    stamp: tuple  # (mtime_ns, size) when read; a bundle: one per file
    headers: list
    body: bytes
    gzipped: bytes | None
    etag: bytes


class StaticFiles:
    """ASGI: `prefix` paths from memory, everything else to `app`."""

    def __init__(self, app, prefix: str = "/static/", bundles: dict | None = None):
        self.app, self.prefix = app, prefix
        self.bundles = BUNDLES if bundles is None else bundles
        self.files: dict = {}  # relative path -> _File

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD"):
            return await self._plain(send, 405, b"Only GET and HEAD here.\n")
        found = self._file(scope["path"][len(self.prefix):])
        if found is None:
            return await self._plain(send, 404, b"No such file.\n")
        request = dict(scope["headers"])
        if request.get(b"if-none-match", b"") == found.etag:
            return await self._send(send, 304, [(b"etag", found.etag)], b"")
        headers = list(found.headers)
        body = found.body
        if found.gzipped is not None and b"gzip" in request.get(b"accept-encoding", b""):
            body = found.gzipped
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send(send, 200, headers, b"" if scope["method"] == "HEAD" else body)

    def warm(self) -> None:
        """Build the bundles now (each is some 20 ms of joining and gzip)."""
        for relative in self.bundles:
            self._file(relative)

    def _file(self, relative: str) -> _File | None:
        """The file (or bundle), read again if it changed on disk; None if there is none."""
        cached = self.files.get(relative)
        if cached is not None and _stamp(cached.path) == cached.stamp:
            return cached
        if relative in self.bundles:
            found = self._read_bundle(relative)
        else:
            normal = posixpath.normpath(relative).lstrip("/")
            if not relative or normal != relative or normal.startswith(".."):
                return None
            path = finders.find(normal)
            if not path or not os.path.isfile(path):
                return None
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                body = f.read()
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()
            found = self._prepare(path, (st.st_mtime_ns, st.st_size), st.st_mtime, body, etag)
        if found is not None:
            self.files[relative] = found
            log.debug("static %s: %d bytes (%s gzipped)", relative, len(found.body),
                      len(found.gzipped) if found.gzipped else "not")
        return found

    def _read_bundle(self, relative: str) -> _File | None:
        paths = [finders.find(member) for member in self.bundles[relative]]
        if not all(paths):
            log.error("static bundle %s: %s not found", relative,
                      [m for m, p in zip(self.bundles[relative], paths) if not p])
            return None
        parts, stamps, newest = [], [], 0.0
        for path in paths:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                parts.append(SOURCE_MAP.sub(b"", f.read()).rstrip())
            stamps.append((st.st_mtime_ns, st.st_size))
            newest = max(newest, st.st_mtime)
        # ";" ends a script whose last statement had none before the next begins.
        body = (b"\n;\n" if relative.endswith(".js") else b"\n").join(parts) + b"\n"
        etag = f'"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'.encode()
        return self._prepare(tuple(paths), tuple(stamps), newest, body, etag)

    @staticmethod
    def _prepare(path, stamp: tuple, mtime: float, body: bytes, etag: bytes) -> _File:
        kind = mimetypes.guess_type(path if isinstance(path, str) else path[0])[0] \
            or "application/octet-stream"
        gzipped = None
        if kind.startswith(COMPRESSIBLE) and len(body) > 1024:
            gzipped = gzip.compress(body, 6, mtime=0)
            if len(gzipped) >= len(body):
                gzipped = None
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        headers = [(b"content-type", kind.encode()), (b"etag", etag),
                   (b"last-modified", formatdate(mtime, usegmt=True).encode()),
                   (b"cache-control", b"no-cache")]
        if gzipped is not None:
            headers.append((b"vary", b"Accept-Encoding"))
        return _File(path, stamp, headers, body, gzipped, etag)

    @staticmethod
    async def _send(send, status: int, headers: list, body: bytes):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _plain(self, send, status: int, text: bytes):
        await self._send(send, status, [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(text)).encode())], text)


def _stamp(path) -> tuple | None:
    """(mtime_ns, size) of a file, or a tuple of them for a bundle's files;
    None if one is gone."""
    if not isinstance(path, str):
        stamps = tuple(_stamp(p) for p in path)
        return None if None in stamps else stamps
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
