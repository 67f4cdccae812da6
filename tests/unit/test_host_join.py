"""A machine joins the lab as a sandbox host: the site says yes with what the host
needs, or no with a reason an operator can act on."""
from __future__ import annotations

import json
import time

import pytest

from labs.sandboxes import hosts
from labs.sandboxes.models import SandboxHost
from runtime import hostinfo, hostjoin

pytestmark = pytest.mark.django_db(transaction=True)


def ask(client, token, **body):
    payload = {"name": "h9", "gateway_url": "http://h9.example.org:8001",
               "version": hostinfo.code_version(), "recipe": hostinfo.recipe_version(),
               "clock": time.time(), **body}
    response = client.post("/hosts/join", json.dumps(payload), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, response.json()


@pytest.fixture
def shared_database(settings):
    settings.DATABASE_URL = "postgresql://lab:secret@db.example.org/lab"
    settings.LAB_HOSTS_REDIS_URL = "redis://site.example.org:6390/0"


def test_a_host_joins_with_a_token_and_gets_what_it_needs(client, shared_database):
    status, body = ask(client, hosts.join_token())
    assert status == 200, body
    assert body["env"]["DATABASE_URL"] == "postgresql://lab:secret@db.example.org/lab"
    assert body["env"]["REDIS_URL"] == "redis://site.example.org:6390/0"
    assert body["env"]["LAB_GATEWAY_KEY"]
    host = SandboxHost.objects.get(name="h9")
    assert (host.gateway_url, host.refused, host.state) == ("http://h9.example.org:8001", "",
                                                          "active")
    listed = client.get("/hosts/", HTTP_AUTHORIZATION=f"Bearer {hosts.join_token()}").json()
    assert [h["name"] for h in listed["hosts"]] == ["h9"]


def test_a_join_is_refused_with_a_reason(client, shared_database, settings):
    token = hosts.join_token()
    status, body = ask(client, "not-a-token")
    assert status == 403 and "manage.py hosts token" in body["error"]
    assert client.get("/hosts/", HTTP_AUTHORIZATION="Bearer nope").status_code == 403

    status, body = ask(client, token, version="0123456789abcdef")
    assert status == 409 and "its code (0123456789abcdef) is not the site's" in body["error"]
    status, body = ask(client, token, name="h8", clock=time.time() + 120)
    assert status == 409 and "clock is +120 s off" in body["error"]
    # Listed with the reason, and given no session.
    assert "clock" in SandboxHost.objects.get(name="h8").refused
    assert hosts.place(1) is None or hosts.place(1).name not in ("h8", "h9")

    status, body = ask(client, token, name="local")
    assert status == 409 and "site's own machine" in body["error"]
    status, body = ask(client, token, name="Bad_Name")
    assert status == 400
    settings.DATABASE_URL = ""
    status, body = ask(client, token)
    assert status == 409 and "SQLite" in body["error"]


def test_the_join_command_asks_the_site_and_writes_the_hosts_settings(
        live_server, shared_database, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hostjoin, "ENV_FILE", tmp_path / "host.env")
    assert hostjoin.join(live_server.url, "wrong", "h7", "http://h7:8001",
                         setup=False, start=False) == 2
    assert "this join token is wrong or has expired" in capsys.readouterr().err
    assert not (tmp_path / "host.env").exists()

    assert hostjoin.join(live_server.url, hosts.join_token(), "h7", "http://h7:8001",
                         setup=False, start=False) == 0
    env = dict(line.split("=", 1) for line in (tmp_path / "host.env").read_text().splitlines())
    assert env["LAB_HOST_NAME"] == "h7" and env["LAB_GATEWAY_URL"] == "http://h7:8001"
    assert env["DATABASE_URL"] == "postgresql://lab:secret@db.example.org/lab"
    assert (tmp_path / "host.env").stat().st_mode & 0o077 == 0  # secrets: the owner only
    assert hostjoin.list_hosts(live_server.url, hosts.join_token()) == 0
    assert "h7" in capsys.readouterr().out
