"""A web process loads at start what its first requests would load, so a
class arriving just after a restart does not pay for it in its first
learners' joins (labs/asgi.py: warm_up)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import labs.asgi
from django.urls import get_resolver
from labs.celery import app
print("urls", "url_patterns" in get_resolver().__dict__)
print("celery", app.finalized, "router" in app.amqp.__dict__,
      "send_task_message" in app.amqp.__dict__)
"""


def test_a_fresh_web_process_has_its_urls_and_celery_sender_ready(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "labs.settings",
           "DB_PATH": str(tmp_path / "db.sqlite3")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["urls True", "celery True True True"]
