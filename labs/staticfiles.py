"""/static/ served by the web process from memory.

A class arriving at once is forty fresh browsers, each loading the lesson
page's scripts and styles (six files). Django's static handler cost about 7 ms
of the web process's CPU per file (a request object, a hop to a thread, the
file read again each time): some 40 ms per learner before their page could
even open its sockets. Here a file is read once (again only when it changes
on disk), kept with its gzip form, and sent as one message: 2.5-3 ms, which
is about what any request costs Daphne.

Found where Django's finders find them (the static dirs and the apps'), so no
collectstatic is needed. Each response carries an ETag and `Cache-Control:
no-cache`: a browser asks again on each page load and gets a 304 while the
file is unchanged, so a new version of the site's scripts is never run
against an old page.
"""
from __future__ import annotations

import gzip
import logging
import mimetypes
import os
import posixpath
from dataclasses import dataclass
from email.utils import formatdate

from django.contrib.staticfiles import finders

log = logging.getLogger(__name__)

COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass
class _File:
    path: str
    stamp: tuple  # (mtime_ns, size) when read
    headers: list
    body: bytes
    gzipped: bytes | None
    etag: bytes


class StaticFiles:
    """ASGI: `prefix` paths from memory, everything else to `app`."""

    def __init__(self, app, prefix: str = "/static/"):
        self.app, self.prefix = app, prefix
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

    def _file(self, relative: str) -> _File | None:
        """The file, read again if it changed on disk; None if there is none."""
        cached = self.files.get(relative)
        if cached is not None:
            try:
                st = os.stat(cached.path)
            except OSError:
                st = None
            if st is not None and (st.st_mtime_ns, st.st_size) == cached.stamp:
                return cached
        normal = posixpath.normpath(relative).lstrip("/")
        if not relative or normal != relative or normal.startswith(".."):
            return None
        path = finders.find(normal)
        if not path or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            body = f.read()
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()
        gzipped = None
        if kind.startswith(COMPRESSIBLE) and len(body) > 1024:
            gzipped = gzip.compress(body, 6, mtime=0)
            if len(gzipped) >= len(body):
                gzipped = None
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        headers = [(b"content-type", kind.encode()), (b"etag", etag),
                   (b"last-modified", formatdate(st.st_mtime, usegmt=True).encode()),
                   (b"cache-control", b"no-cache")]
        if gzipped is not None:
            headers.append((b"vary", b"Accept-Encoding"))
        self.files[relative] = found = _File(path, (st.st_mtime_ns, st.st_size), headers, body,
                                             gzipped, etag)
        log.debug("static %s: %d bytes (%s gzipped)", relative, len(body),
                  len(gzipped) if gzipped else "not")
        return found

    @staticmethod
    async def _send(send, status: int, headers: list, body: bytes):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _plain(self, send, status: int, text: bytes):
        await self._send(send, status, [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(text)).encode())], text)
