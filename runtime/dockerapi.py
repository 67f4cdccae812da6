"""The host Docker engine's HTTP API over its unix socket (the Engine API,
no SDK): what the docker driver's start path asks, without a `docker` CLI
process per request (30-60 ms each, eight a start)."""
from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Optional

from .model import LabRuntimeError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class EngineAPI:
    """Requests to one engine's socket; a connection per request (cheap on a unix socket)."""

    def __init__(self, sock_path: str, timeout: float = 120.0):
        self.sock_path, self.timeout = sock_path, timeout

    @classmethod
    def for_host(cls, host: Optional[str]) -> Optional["EngineAPI"]:
        """The API of a `unix://` engine address; None for others (the CLI speaks to those)."""
        if host and host.startswith("unix://"):
            return cls(host[len("unix://"):])
        return None

    def request(self, method: str, path: str, query: Optional[dict] = None, body=None,
                content_type: str = "application/json") -> tuple:
        """(HTTP status, the answer's bytes); a LabRuntimeError if the engine does not answer."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {}
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
            headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        conn = _UnixConnection(self.sock_path, self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        except (OSError, http.client.HTTPException) as e:
            raise LabRuntimeError(f"the host Docker engine at {self.sock_path} did not answer "
                                  f"{method} {path.split('?')[0]}: {e}") from None
        finally:
            conn.close()

    def call(self, method: str, path: str, query: Optional[dict] = None, body=None,
             ok=(200, 201, 204, 304), content_type: str = "application/json"):
        """The decoded JSON answer (None when empty); an error naming the engine's message."""
        status, data = self.request(method, path, query, body, content_type)
        if status not in ok:
            raise LabRuntimeError(f"the host Docker engine refused {method} {path}: "
                                  f"{status} {_message(data)}")
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data

    def get(self, path: str, query: Optional[dict] = None, missing_ok: bool = False):
        """GET; None for 404 when `missing_ok`."""
        status, data = self.request("GET", path, query)
        if status == 404 and missing_ok:
            return None
        if status != 200:
            raise LabRuntimeError(f"the host Docker engine refused GET {path}: "
                                  f"{status} {_message(data)}")
        return json.loads(data)


def _message(data: bytes) -> str:
    try:
        return json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()[:500]


def label_filter(*labels: str) -> dict:
    """The `filters` query parameter for labels ("k" or "k=v")."""
    return {"filters": json.dumps({"label": list(labels)})}
