"""Integration tests run the real thing: nodes with a real dockerd, as root.

Every node a test starts is removed by the `nodes` fixture, also when the
test fails; a test that cannot run here (not root) fails loudly rather than
skipping, since these are the tests that prove the lab works.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def driver():
    from runtime.builtin import BuiltinDriver
    d = BuiltinDriver()
    problems = d.preflight()
    assert not problems, "the built-in runtime cannot run here: " + "; ".join(problems)
    return d


class NodeFactory:
    """Starts nodes in throwaway sessions and removes every one of them afterwards."""

    def __init__(self, driver):
        self.driver = driver
        self.sessions: set = set()

    def session(self) -> str:
        name = "t" + secrets.token_hex(4)
        self.sessions.add(name)
        return name

    def start(self, session=None, name="node1", restore=""):
        from runtime import NodeSpec
        session = session or self.session()
        self.sessions.add(session)
        return asyncio.run(self.driver.start(NodeSpec(session=session, name=name, restore=restore)))

    def exec(self, node, argv, **kw):
        return asyncio.run(self.driver.exec(node.id, argv, **kw))

    def sh(self, node, script, timeout=60):
        return self.exec(node, ["sh", "-c", script], timeout=timeout)

    def cleanup(self):
        for session in self.sessions:
            asyncio.run(self.driver.stop_session(session))


@pytest.fixture
def nodes(driver):
    factory = NodeFactory(driver)
    try:
        yield factory
    finally:
        factory.cleanup()


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="session")
def lab_registry():
    """The lab registry, holding the stand-in images nodes pull through it
    (built first if missing; a no-op when they are up to date)."""
    from runtime import lessonimages, registry
    from runtime.builtin import BuiltinDriver
    with registry.ensure_running():
        asyncio.run(lessonimages.build_all(BuiltinDriver()))
        assert registry.has_image("library/alpine"), "the lab registry has no alpine stand-in"
        yield


@pytest.fixture
def host_service():
    """The port of a TCP service on every host address (tests/support/hostnet.py)."""
    from tests.support.hostnet import host_service
    with host_service() as port:
        yield port
