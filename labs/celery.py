"""The Celery app: `celery -A labs.celery:app worker`.

Configured from Django settings (every CELERY_* name); the broker is REDIS_URL.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")

app = Celery("labs")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every installed app's tasks module (labs.sandboxes.tasks, labs.accounts.tasks).
app.autodiscover_tasks()
