"""A learner's client for the running site: HTTP with cookies, and websockets.

Used by integration tests (and the bench) to drive the real site the way
the page's JavaScript does, without a browser.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.parse
import urllib.request

import websockets

from labs.oslimits import raise_open_file_limit

# A client of a whole class holds hundreds of sockets at once.
raise_open_file_limit()


class Learner:
    def __init__(self, base_url: str):
        self.base = base_url
        self.jar = http.cookiejar.CookieJar()
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

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

    def start(self, slug: str) -> dict:
        return json.loads(self.post(f"/lessons/{slug}/start").read())

    def ws_headers(self) -> dict:
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        return {"Cookie": cookies, "Origin": self.base}

    def ws_url(self, path: str) -> str:
        return self.base.replace("http://", "ws://") + path

    def connect(self, path: str):
        return websockets.connect(self.ws_url(path), additional_headers=self.ws_headers(),
                                  max_size=None)


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
