"""Terminals of nodes on other hosts: the site signs, the host's gateway checks.

The page asks the site where to open a node's terminal: its own socket for a
node on this machine, the host gateway's address with a signed token for a
node elsewhere. The gateway (labs.gateway_asgi) opens only what a token names:
this node, this user, lately, signed with the lab's key.
"""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing

from labs.gateway_asgi import application as gateway_app
from labs.sandboxes import checks, gateway
from labs.sandboxes.models import LabSession, SandboxHost

pytestmark = pytest.mark.django_db(transaction=True)


def on_host(session, name="beta", url="http://10.77.0.3:8001"):
    host = SandboxHost.objects.create(name=name, gateway_url=url)
    LabSession.objects.filter(pk=session.pk).update(host=host)
    session.refresh_from_db()
    return host


def test_tokens_name_one_node_one_purpose_and_expire(settings, monkeypatch):
    token = gateway.sign(7, 42, "abc123")
    assert gateway.verify(token, 42) == {"u": 7, "n": 42, "r": "abc123", "p": "terminal"}
    assert gateway.verify(token, 43) is None  # another node
    assert gateway.verify(token, 42, purpose="watch") is None
    assert gateway.verify(token[:-2] + "xx", 42) is None  # tampered
    assert gateway.verify("", 42) is None
    settings.LAB_GATEWAY_KEY = "another key"
    assert gateway.verify(token, 42) is None  # not signed with the lab's key
    settings.LAB_GATEWAY_KEY = ""
    later = time.time() + settings.LAB_GATEWAY_TOKEN_SECONDS + 1
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert gateway.verify(token, 42) is None  # too old


def test_the_site_hands_out_its_own_socket_or_the_hosts_gateway(client, ready_session, ada, bob):
    node = ready_session.node1()
    client.force_login(ada)
    body = client.get(f"/nodes/{node.pk}/terminal").json()
    assert body == {"ok": True, "url": f"/ws/nodes/{node.pk}/terminal/"}
    assert ready_session.event()["gateway"] == ""

    on_host(ready_session)
    assert ready_session.event()["gateway"] == "http://10.77.0.3:8001"
    url = client.get(f"/nodes/{node.pk}/terminal").json()["url"]
    assert url.startswith(f"ws://10.77.0.3:8001/ws/nodes/{node.pk}/terminal/?token=")
    claims = gateway.verify(parse_qs(urlsplit(url).query)["token"][0], node.pk)
    assert claims == {"u": ada.pk, "n": node.pk, "r": node.runtime_id, "p": "terminal"}

    client.force_login(bob)
    assert client.get(f"/nodes/{node.pk}/terminal").status_code == 403


async def gateway_socket(path: str):
    communicator = WebsocketCommunicator(gateway_app, path)
    connected, _ = await communicator.connect()
    return communicator, connected


async def closes_with(path: str) -> int | None:
    communicator, connected = await gateway_socket(path)
    assert connected
    out = await communicator.receive_output(timeout=5)
    while out["type"] != "websocket.close":
        out = await communicator.receive_output(timeout=5)
    return out.get("code")


async def test_the_gateway_opens_only_what_a_token_names(ready_session, ada, bob, fake_driver,
                                                         settings, monkeypatch):
    settings.LAB_HOST_NAME = "beta"  # this process is beta's gateway
    # Enter asks for a check run in the background; with eager Celery it runs
    # in a thread that pushes to this test's event loop, and one still running
    # as the test ended deadlocked the loop's teardown (1 run in 3 here). This
    # test is about tokens: no checks.
    async def no_checks(*args, **kwargs):
        return None
    monkeypatch.setattr(checks, "arequest", no_checks)
    node = await database_sync_to_async(ready_session.node1)()
    await database_sync_to_async(on_host)(ready_session)
    path = f"/ws/nodes/{node.pk}/terminal/?cols=80&rows=24"

    good = gateway.sign(ada.pk, node.pk, node.runtime_id)
    term, connected = await gateway_socket(path + "&token=" + good)
    assert connected
    await term.send_to(bytes_data=b"echo through-the-gateway\r")
    assert await term.receive_from(timeout=2) == b"echo through-the-gateway\r"
    await term.disconnect()

    assert await closes_with(path) == 4403  # no token: no login works here
    assert await closes_with(path + "&token=" + gateway.sign(ada.pk, node.pk + 1,
                                                             node.runtime_id)) == 4403
    assert await closes_with(path + "&token=" + gateway.sign(bob.pk, node.pk,
                                                             node.runtime_id)) == 4403
    assert await closes_with(path + "&token=" + gateway.sign(ada.pk, node.pk, "replaced")) == 4403
    assert await closes_with(path + "&token=" + gateway.sign(ada.pk, node.pk, node.runtime_id,
                                                             "watch")) == 4403
    # The gateway serves terminals and nothing else of the site.
    lesson_socket = WebsocketCommunicator(gateway_app, "/ws/lessons/first-containers/")
    with pytest.raises(ValueError):
        await lesson_socket.connect()


async def test_the_sites_socket_sends_a_page_to_the_gateway_and_fails_nothing(
        ready_session, ada, ws_headers, fake_driver):
    from labs.asgi import application as site_app
    node = await database_sync_to_async(ready_session.node1)()
    await database_sync_to_async(on_host)(ready_session)
    headers = await database_sync_to_async(ws_headers)(ada)
    communicator = WebsocketCommunicator(site_app, f"/ws/nodes/{node.pk}/terminal/",
                                         headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    out = await communicator.receive_output(timeout=5)
    assert out == {"type": "websocket.close", "code": 4421}  # ask the site again
    await database_sync_to_async(node.refresh_from_db)()
    assert node.state == "ready"  # not this machine's node, not marked lost
    assert ("open_terminal", node.runtime_id) not in [c[:2] for c in fake_driver.calls]


def test_a_port_of_a_node_on_another_host_opens_on_that_hosts_gateway(client, ready_session, ada):
    node = ready_session.node1()
    host = on_host(ready_session)
    SandboxHost.objects.filter(pk=host.pk).update(ports_domain="beta.lab.example.org")
    client.force_login(ada)
    response = client.get(f"/nodes/{node.pk}/ports/8080/")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"http://n{node.pk}-8080.beta.lab.example.org:8001/.lab/enter?token=")


async def test_the_gateway_serves_port_origins_under_its_domain(settings):
    from channels.testing import HttpCommunicator
    settings.LAB_PORTS_DOMAIN = "beta.lab.example.org"
    port = HttpCommunicator(gateway_app, "GET", "/", headers=[(b"host", b"n5-80.beta.lab.example.org")])
    assert (await port.get_response())["status"] == 403  # the port origin: no cookie, no entry
    other = HttpCommunicator(gateway_app, "GET", "/", headers=[(b"host", b"10.77.0.3:8001")])
    assert (await other.get_response())["status"] == 404  # nothing of the site here
