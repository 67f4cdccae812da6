"""Lesson images: in a fresh node, `docker run alpine|ubuntu|mysql|nginx` pulls the
lab's stand-ins from the lab registry and they behave the way lessons expect.

Runs as root against real nodes. The session fixture uses the running lab
registry or starts a temporary one, and builds whatever image is missing
(as `python -m runtime images build` does; a no-op when all are current).
"""
from __future__ import annotations

import asyncio
import re
import secrets
import time

import pytest

from runtime import NodeSpec, lessonimages, registry
from runtime.builtin import BuiltinDriver

pytestmark = pytest.mark.timeout(1500)  # the first run builds the images (~2 min here)


@pytest.fixture(scope="session")
def lab_registry():
    driver = BuiltinDriver()
    problems = driver.preflight()
    assert not problems, "the built-in runtime cannot run here: " + "; ".join(problems)
    assert registry.mode() == "standins", "these tests check the stand-ins: unset LAB_REGISTRY_MODE"
    with registry.ensure_running():
        asyncio.run(lessonimages.build_all(driver))
        yield driver


class Node:
    """A fresh node of its own session, with shell helpers."""

    def __init__(self, driver, node):
        self.driver, self.node = driver, node

    def sh(self, script: str, timeout: float = 120):
        return asyncio.run(self.driver.exec(self.node.id, ["sh", "-c", script], timeout=timeout))

    def ok(self, script: str, timeout: float = 120) -> str:
        result = self.sh(script, timeout)
        assert result.exit_code == 0, f"`{script}` exited {result.exit_code}:\n{result.output}"
        return result.output

    def wait_until(self, script: str, want, deadline: float, what: str) -> str:
        """Run `script` until want(result) holds; fail with the last output after `deadline` s."""
        end = time.monotonic() + deadline
        while True:
            result = self.sh(script, timeout=30)
            if want(result):
                return result.output
            if time.monotonic() > end:
                pytest.fail(f"{what} not within {deadline:.0f}s; last `{script}` "
                            f"(exit {result.exit_code}):\n{result.output[-2000:]}")
            time.sleep(0.3)  # poll interval of a condition wait, not a synchronisation


@pytest.fixture
def node(lab_registry):
    driver = lab_registry
    started = asyncio.run(driver.start(NodeSpec(session="img" + secrets.token_hex(4), name="node1")))
    try:
        yield Node(driver, started)
    finally:
        asyncio.run(driver.stop(started.id))


def last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def test_alpine_prints_the_container_hostname(node):
    out = node.ok("docker run --rm alpine hostname")
    # Pulled through the node's registry mirror (there is no Docker Hub here).
    assert "Pulling from library/alpine" in out
    assert re.fullmatch(r"[0-9a-f]{12}", last_line(out)), out
    # A busybox userland: the shell and the usual applets are there.
    assert node.ok("docker run --rm alpine sh -c 'ls / && whoami && test -d /tmp'").split()[-1] == "root"


def test_alpine_says_it_is_a_stand_in(node):
    node.ok("docker pull -q alpine")
    labels = node.ok("docker image inspect --format "
                     "'{{index .Config.Labels \"lab.stand-in\"}} {{index .Config.Labels \"lab.stand-in.for\"}}' "
                     "alpine")
    assert labels.split() == ["true", "alpine"]
    description = node.ok("docker image inspect --format "
                          "'{{index .Config.Labels \"org.opencontainers.image.description\"}}' alpine")
    assert "stand-in" in description and "Debian packages" in description
    assert node.ok("docker image inspect --format '{{json .Config.Cmd}}' alpine").strip() == '["/bin/sh"]'


def test_ubuntu_has_os_release_and_ps(node):
    os_release = node.ok("docker run --rm ubuntu cat /etc/os-release")
    assert "VERSION_CODENAME=bookworm" in os_release
    ps = node.ok("docker run --rm ubuntu ps aux")
    assert re.search(r"^USER\s+PID\s+%CPU", ps, re.M), ps
    assert re.search(r"^root\s+1\s.*ps aux$", ps, re.M), ps
    assert node.ok("docker run --rm ubuntu sh -c 'echo $0; test -x /bin/bash && echo bash'").split()[-1] == "bash"


def test_mysql_starts_with_a_root_password(node):
    node.ok("docker run -d --name mydb -e MYSQL_ROOT_PASSWORD=pw -e MYSQL_DATABASE=shop mysql")
    out = node.wait_until(
        "docker exec mydb mysql --user=root --password=pw -e 'select 1 as answer'",
        lambda r: r.exit_code == 0, deadline=120, what="mysql answering")
    assert re.search(r"^answer\s*\n1\s*$", out, re.M), out
    logs = node.ok("docker logs mydb 2>&1")
    assert re.search(r"ready for connections\.\s*\nVersion: .*port: 3306", logs), logs[-3000:]
    # The password is really set: a wrong one is refused; the database exists.
    wrong = node.sh("docker exec mydb mysql --user=root --password=nope -e 'select 1'")
    assert wrong.exit_code != 0 and "Access denied" in wrong.output, wrong.output
    assert "shop" in node.ok("docker exec mydb mysql --user=root --password=pw -e 'show databases'")
    assert "MariaDB" in node.ok("docker exec mydb mysql --user=root --password=pw --version")
    # Other containers reach it over the network, as root@'%'.
    node.ok("docker network create labnet && docker network connect labnet mydb")
    remote = node.ok("docker run --rm --network labnet mysql "
                     "mysql --host=mydb --user=root --password=pw -e 'select 42 as remote'")
    assert re.search(r"^42\s*$", remote, re.M), remote


def test_mysql_without_a_password_option_fails_like_the_official_image(node):
    result = node.sh("docker run --name nopw mysql")
    assert result.exit_code == 1, result.output
    assert "Database is uninitialized and password option is not specified" in result.output
    assert "MYSQL_ROOT_PASSWORD" in result.output
    assert node.ok("docker inspect --format '{{.State.ExitCode}}' nopw").strip() == "1"


def test_nginx_serves_the_welcome_page_on_a_published_port(node):
    node.ok("docker run -d --name web -p 8080:80 nginx")
    page = node.wait_until("curl -s localhost:8080", lambda r: "Welcome to nginx!" in r.output,
                           deadline=60, what="nginx answering on port 8080")
    assert "<title>Welcome to nginx!</title>" in page
    # Requests show up in `docker logs` (access log on stdout).
    assert '"GET / HTTP/1.1" 200' in node.ok("docker logs web 2>&1")


def test_a_dockerfile_from_nginx_serves_its_own_page(node):
    node.ok("mkdir -p /root/site && cd /root/site && echo '<h1>my page</h1>' > index.html && "
            "printf 'FROM nginx:latest\\nCOPY index.html /usr/share/nginx/html\\n' > Dockerfile && "
            "docker build -q -t mysite . && docker run -d -p 8081:80 mysite", timeout=300)
    page = node.wait_until("curl -s localhost:8081", lambda r: "my page" in r.output,
                           deadline=60, what="the custom nginx image answering")
    assert "<h1>my page</h1>" in page


def test_ubuntu_installs_debian_packages_with_apt(node):
    out = node.ok("docker run --rm ubuntu sh -c "
                  "'apt-get update -qq && apt-get install -y -qq figlet >/dev/null && figlet -v'",
                  timeout=300)
    assert "FIGlet" in out, out


# The stand-in alpine's apk (runtime/lessonimages/alpine/apk) installs Debian
# packages listed in /etc/apk/lab-index from the host's Debian mirror.

HELLO_DOCKERFILE = """FROM alpine
RUN apk update && apk add nodejs
COPY . /app
WORKDIR /app
CMD ["node","index.js"]
"""
HELLO_JS = 'var os = require("os"); var hostname = os.hostname(); console.log("hello from " + hostname);\n'


def test_a_dockerfile_from_alpine_adds_nodejs_with_apk_and_runs_node(node):
    node.ok(f"mkdir -p /root/hello && cd /root/hello && cat > Dockerfile <<'EOF'\n{HELLO_DOCKERFILE}EOF\n"
            f"cat > index.js <<'EOF'\n{HELLO_JS}EOF")
    began = time.monotonic()
    build = node.ok("cd /root/hello && docker build -t hello:v0.1 . 2>&1", timeout=300)
    seconds = time.monotonic() - began
    # apk add fetched Debian's nodejs and its closure (glibc among them).
    assert re.search(r"Installing nodejs \(18\.", build), build[-3000:]
    assert re.search(r"Installing libc6 \(", build), build[-3000:]
    # The whole build, apk add nodejs included, takes seconds (about 10 here).
    assert seconds < 120, f"docker build took {seconds:.0f}s:\n{build[-3000:]}"
    out = node.ok("docker container run --name hello1 hello:v0.1")
    assert re.fullmatch(r"hello from [0-9a-f]{12}", last_line(out)), out
    container_id = node.ok("docker inspect --format '{{.Id}}' hello1").strip()
    assert last_line(out) == f"hello from {container_id[:12]}"


def test_apk_add_bridge_utils_gives_debians_brctl(node):
    build = node.ok("printf 'FROM alpine\\nRUN apk add --no-cache bridge-utils\\n' > /root/Dockerfile.br && "
                    "docker build -t withbrctl -f /root/Dockerfile.br /root 2>&1", timeout=300)
    assert "Installing bridge-utils (1.7" in build, build[-3000:]
    # PATH finds Debian's /sbin/brctl, not BusyBox's applet (no -V, no `show`).
    assert node.ok("docker run --rm withbrctl which brctl").strip() == "/sbin/brctl"
    assert "bridge-utils, 1.7" in node.ok("docker run --rm withbrctl brctl -V")
    node.ok("docker run --rm withbrctl brctl show")  # no bridges in a container: no output
    # The stand-in before apk: BusyBox's brctl, which cannot `show`.
    assert node.sh("docker run --rm alpine brctl show").exit_code != 0


def test_apk_add_update_installs_the_lesson_tools(node):
    out = node.ok("docker run --rm alpine sh -c 'apk add --update curl bash iputils figlet && "
                  "curl --version && bash -c \"echo bash \\$BASH_VERSION\" && /bin/ping -V && "
                  "figlet apk && cat /etc/apk/world'", timeout=300)
    assert "fetch http://" in out and "OK: " in out, out  # `--update` ran `apk update`
    assert re.search(r"^curl 7\.\d+", out, re.M), out
    assert re.search(r"^bash 5\.", out, re.M), out
    assert "ping from iputils" in out, out
    assert "/ _` | '_ \\| |/ /" in out, out  # figlet's "apk" (figlet -> figlet-figlet link)
    assert out.split()[-4:] == ["curl", "bash", "iputils", "figlet"], out
    # The same in a RUN line with --no-cache, and a package already there is quick.
    node.ok("printf 'FROM alpine\\nRUN apk add --no-cache curl\\nRUN apk add --no-cache curl\\n' "
            "> /root/Dockerfile.curl && docker build -q -t withcurl -f /root/Dockerfile.curl /root",
            timeout=300)
    assert re.search(r"^curl 7\.", node.ok("docker run --rm withcurl curl --version"), re.M)


def test_apk_add_of_an_unknown_package_fails_and_says_why(node):
    result = node.sh("docker run --rm alpine apk add --no-cache nodejs no-such-pkg")
    assert result.exit_code == 1, result.output
    assert "no-such-pkg (no such package in the lab's stand-in apk)" in result.output, result.output
    assert "lab stand-in built from Debian packages" in result.output, result.output
    # Nothing was installed: the names are checked before any download.
    assert "Installing" not in result.output, result.output


def test_alpine_stays_small_until_something_is_added(node):
    node.ok("docker pull -q alpine")
    size = int(node.ok("docker image inspect --format '{{.Size}}' alpine").strip())
    # Static busybox (about 2 MB) plus apk and its index (about 0.2 MB). No glibc
    # (libc6 alone unpacks to 12 MB) and no Debian base: 4 MB is a generous bound
    # that either would break; the real alpine is about 8 MB.
    assert size < 4_000_000, f"alpine is {size} bytes"
    assert re.fullmatch(r"[0-9a-f]{12}", last_line(node.ok("docker run --rm alpine hostname")))
    assert node.sh("docker run --rm alpine test -e /lib/x86_64-linux-gnu/libc.so.6").exit_code == 1
    assert "lab stand-in" in node.ok("docker run --rm alpine apk --version")
    assert "lab stand-in" in node.ok("docker run --rm alpine cat /etc/os-release")
