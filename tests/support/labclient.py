"""A learner's client for the running site: HTTP with cookies, and websockets.

Used by integration tests (and the bench) to drive the real site the way
the page's JavaScript does, without a browser.
"""
from __future__ import annotations

import http.client
import http.cookiejar
import json
import re
import socket
import time
import urllib.parse
import urllib.request

import websockets

from labs.oslimits import raise_open_file_limit

# A client of a whole class holds hundreds of sockets at once.
raise_open_file_limit()


def _port_origin_handler(site: tuple, names: dict):
    """An HTTP handler that dials the site for *.localhost names, as browsers do.

    Published ports open on n<node>-<port>.localhost (labs.sandboxes.portproxy); browsers
    send every *.localhost name to the loopback address without asking DNS,
    and so does this client: to the site's own address, keeping the Host header.
    `names` ({domain: address}) stands in for the DNS of sandbox hosts' port
    domains (*.<domain> is that host's gateway).
    """
    class Connection(http.client.HTTPConnection):
        def connect(self):
            found = next((address for domain, address in names.items()
                          if self.host.endswith("." + domain)), None)
            if self.host.endswith(".localhost"):
                self.sock = socket.create_connection((site[0], self.port), self.timeout)
            elif found:
                self.sock = socket.create_connection((found, self.port), self.timeout)
            else:
                super().connect()

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Connection, req)
    return Handler()


class Learner:
    def __init__(self, base_url: str, names: dict | None = None):
        self.base = base_url
        self.jar = http.cookiejar.CookieJar()
        site = urllib.parse.urlsplit(base_url)
        self.http = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            _port_origin_handler((site.hostname, site.port), names or {}))

    def get(self, path: str):
        return self.http.open(self.base + path, timeout=30)

    def csrf(self) -> str:
        for cookie in self.jar:
            if cookie.name == "csrftoken":
                return cookie.value
        page = self.get("/accounts/login/").read().decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    def post(self, path: str, data: dict | None = None):
        self.csrf()
        token = self.csrf()
        body = urllib.parse.urlencode({**(data or {}), "csrfmiddlewaretoken": token}).encode()
        req = urllib.request.Request(self.base + path, data=body, headers={
            "X-CSRFToken": token, "Referer": self.base + path})
        return self.http.open(req, timeout=60)

    def signup(self, username: str, password: str = "a-long-pass-phrase-42"):
        self.get("/accounts/signup/")
        resp = self.post("/accounts/signup/", {"username": username, "password1": password,
                                               "password2": password})
        assert "/accounts/signup/" not in resp.geturl(), "signup did not go through"
        return resp

    def start(self, slug: str, resume: bool = False) -> dict:
        """Start (Start, or Start fresh); resume=True: Resume my machine."""
        return json.loads(self.post(f"/lessons/{slug}/start", {"resume": "1" if resume else "0"}).read())

    def ws_headers(self) -> dict:
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        return {"Cookie": cookies, "Origin": self.base}

    def ws_url(self, path: str) -> str:
        return self.base.replace("http://", "ws://") + path

    def connect(self, path: str):
        return websockets.connect(self.ws_url(path), additional_headers=self.ws_headers(),
                                  max_size=None)

    def terminal_url(self, node: int, cols: int = 120, rows: int = 30) -> str:
        """Where the page would open the node's terminal: the site's socket, or
        the node's host gateway with a token (labs.sandboxes.gateway)."""
        url = json.loads(self.get(f"/nodes/{node}/terminal").read())["url"]
        if url.startswith("/"):
            url = self.ws_url(url)
        return url + ("&" if "?" in url else "?") + f"cols={cols}&rows={rows}"

    def terminal(self, node: int, cols: int = 120, rows: int = 30):
        """The node's terminal socket, wherever the node runs, opened as the page does."""
        url = self.terminal_url(node, cols, rows)
        on_site = url.startswith(self.ws_url("/"))
        headers = self.ws_headers() if on_site else {"Origin": self.base}
        return websockets.connect(url, additional_headers=headers, max_size=None)

    def connect_port_origin(self, origin: str, path: str):
        """A websocket to a published port's origin (http://n<node>-<port>.localhost:<port>),
        with this learner's cookies for that origin, opened from a page of that origin."""
        parts = urllib.parse.urlsplit(origin)
        request = urllib.request.Request(origin + path)
        self.jar.add_cookie_header(request)
        headers = {"Origin": origin}
        if request.get_header("Cookie"):
            headers["Cookie"] = request.get_header("Cookie")
        site = urllib.parse.urlsplit(self.base)
        return websockets.connect(f"ws://{parts.netloc}{path}", additional_headers=headers,
                                  host=site.hostname, port=parts.port, max_size=None)


async def next_event(ws, predicate, seconds: float = 60) -> dict:
    """The first JSON event on `ws` that satisfies `predicate`, within a deadline."""
    import asyncio
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching event arrived in time")
        event = json.loads(await asyncio.wait_for(ws.recv(), left))
        if predicate(event):
            return event
