"""A learner's published app runs on an origin of its own and cannot read the site.

The escape suite's "shared services" attacks, in a real browser: a page served by
a learner's nginx carries a script that tries, with the credentials of whoever
opens it, to read the site's pages (the dashboard, a lesson page with its CSRF
token), to frame the site, and to read the lab's cookies. The same reads run from
a page of the site itself first, so the test shows it would see a leak.

The site is opened at http://localhost:<port> here (not 127.0.0.1), the closest
a port origin (n<node>-<port>.localhost) gets to it.
"""
from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.browser.test_full_lessons import Learner
from tests.integration.test_site_features import runtime_id_of

SLUG = "bridge-networking"
NAME = "mallory-victim"

# What the learner's app tries. SITE is filled in by the test.
READS = r"""
async (site) => {
  const out = {origin: location.origin, cookie: document.cookie};
  async function read(url, options) {
    try {
      const response = await fetch(url, options);
      return "read " + response.status + " " + (await response.text());
    } catch (error) {
      return "blocked " + error.name;
    }
  }
  out.dashboard = await read(site + "/dashboard/", {credentials: "include"});
  out.lesson = await read(site + "/lessons/bridge-networking/", {credentials: "include"});
  out.opaque = await read(site + "/dashboard/", {credentials: "include", mode: "no-cors"});
  const frame = document.createElement("iframe");
  frame.src = site + "/dashboard/";
  document.body.appendChild(frame);
  await new Promise(function (done) { frame.onload = done; setTimeout(done, 3000); });
  try {
    out.frame = "read " + frame.contentDocument.body.innerText;
  } catch (error) {
    out.frame = "blocked " + error.name;
  }
  return out;
}
"""

STEAL_PAGE = ("<!doctype html><title>my app</title><body><script>\n"
              "(" + READS + ")(SITE).then(function (out) {\n"
              "  document.body.dataset.result = JSON.stringify(out);\n"
              "});\n</script></body>\n")


def in_thread(coroutine):
    """Run a coroutine to its end outside Playwright's event loop."""
    result = {}

    def run():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            result["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def node_pk_of(live_site, username: str) -> int:
    done = live_site.manage("shell", "-c", "from labs.sandboxes.models import LabNode; print(LabNode.objects"
                            f".get(session__user__username={username!r}, name='node1').pk)")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_a_published_app_cannot_read_the_site(page, live_site):
    from runtime import get_driver

    port = urlsplit(live_site.url).port
    site = f"http://localhost:{port}"
    learner = Learner(page, SimpleNamespace(url=site))
    learner.sign_up(NAME)
    learner.start(SLUG)

    # Control: the same reads from a page of the site do see the learner.
    control = page.evaluate(READS, site)
    assert NAME in control["dashboard"] and "csrfmiddlewaretoken" in control["lesson"], control

    node_pk = node_pk_of(live_site, NAME)
    runtime_id = runtime_id_of(live_site, node_pk)

    async def publish():
        driver = get_driver("builtin")
        run = await driver.exec(runtime_id, ["docker", "run", "-d", "--name", "app",
                                             "-p", "8080:80", "nginx"], timeout=120)
        assert run.ok, run.output
        copy = await driver.exec(runtime_id, ["docker", "exec", "-i", "app", "sh", "-c",
                                              "cat > /usr/share/nginx/html/steal.html"],
                                 input=STEAL_PAGE.replace("SITE", json.dumps(site)).encode(),
                                 timeout=30)
        assert copy.ok, copy.output
    in_thread(publish())

    link = page.locator('.port-link[data-node="node1"][data-port="8080"]')
    expect(link).to_be_visible(timeout=60_000)
    href = link.get_attribute("href")
    assert href == f"/nodes/{node_pk}/ports/8080/"

    app = page.context.new_page()
    app.goto(site + href + "steal.html")
    assert app.url == f"http://n{node_pk}-8080.localhost:{port}/steal.html"
    app.wait_for_function("() => document.body.dataset.result", timeout=30_000)
    out = json.loads(app.evaluate("() => document.body.dataset.result"))

    assert out["origin"] == f"http://n{node_pk}-8080.localhost:{port}"
    # Neither the site's cookies nor the port origin's own (HttpOnly) are readable.
    for name in ("sessionid", "csrftoken", "lab_port"):
        assert name not in out["cookie"], out
    for key in ("dashboard", "lesson", "frame"):
        assert out[key].startswith("blocked"), (key, out[key][:300])
    assert out["opaque"] == "read 0 ", out["opaque"][:300]  # an opaque answer: no status, no body
    assert NAME not in json.dumps(out)
    print("port origin reads:", json.dumps(out)[:600])
    app.close()
