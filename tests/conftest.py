"""Fixtures shared by the integration and browser suites: the real running lab."""
from __future__ import annotations

import signal
import threading

import pytest


def pytest_configure(config):
    # A run stopped with SIGTERM (a CI time-out, `timeout`, `kill`) ends as
    # Ctrl-C does, so every fixture still removes the nodes and processes it
    # started; by default SIGTERM killed pytest on the spot and left them.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture(scope="session")
def _site_session():
    from tests.support.livesite import live_site
    with live_site() as site:
        yield site


@pytest.fixture
def live_site(_site_session, request):
    """The running lab; its processes' logs are shown when a test using it fails."""
    yield _site_session
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(_site_session.dump_logs())
