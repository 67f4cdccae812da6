"""The lab site: the Django project (settings, urls, asgi, routing, Celery app,
broadcast, socket groups) and, under it, one app per concern: accounts,
courses, sandboxes, classrooms."""
from .celery import app as celery_app

__all__ = ["celery_app"]
