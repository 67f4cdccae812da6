"""The Celery app: `celery -A labs.celery:app worker`.

Configured from Django settings (every CELERY_* name); the broker is REDIS_URL.
"""
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")

app = Celery("labs")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every installed app's tasks module (labs.sandboxes.tasks, labs.accounts.tasks).
app.autodiscover_tasks()


@worker_ready.connect
def start_heartbeat(sender=None, **kwargs):
    """A host's node worker (LAB_HOST_HEARTBEAT=1, as the Procfile starts it)
    tells the site it is there and how much room it has, every few seconds."""
    if os.environ.get("LAB_HOST_HEARTBEAT") != "1":
        return
    from labs.sandboxes.hosts import HeartbeatThread
    from labs.sandboxes.tasks import reap_nodes
    from runtime import get_driver
    HeartbeatThread(get_driver(), reap_nodes).start()


@worker_process_init.connect
def own_event_loop(**kwargs):
    """Each worker process sends its pushes to pages from one event loop
    of its own (labs/asyncbridge.py says why)."""
    from labs import asyncbridge
    asyncbridge.use_own_loop()
