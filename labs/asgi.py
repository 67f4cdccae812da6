"""ASGI entry point: `python -m labs.webserver labs.asgi:application` (Daphne; scripts/web.py).

HTTP goes to Django (with /static/ served straight from the static dirs, so
no collectstatic is needed); websockets go through the origin check and the
auth middleware to the lab consumers. Requests for a port origin,
n<node>-<port>.<LAB_PORTS_DOMAIN> (HTTP and websockets), go to the published-port
proxy (labs.sandboxes.portproxy) instead and never reach the site.
"""
import os

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import FileResponse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")
django.setup(set_prefix=False)


class SiteHandler(ASGIHandler):
    """Django's ASGI handler, running the middleware and the view in one hop
    to the synchronous thread.

    The site's views and middleware are all synchronous. Django's own handler
    runs the middleware in async mode, and each of the seven (MiddlewareMixin)
    then hops to the synchronous thread and back twice, for its request and
    its response part: a cheap page cost the web process about 12 ms of CPU,
    and a class arriving makes four requests per learner.
    """

    def __init__(self):
        BaseHandler.__init__(self)  # not ASGIHandler's: it loads the middleware for async
        self.load_middleware(is_async=False)

    async def handle(self, scope, receive, send):
        try:
            await super().handle(scope, receive, send)
        finally:
            # Django runs each request on a thread of its own, which ends with
            # it: its database connections go too (CONN_MAX_AGE keeps the
            # sockets' and workers' open).
            await sync_to_async(connections.close_all)()

    async def run_get_response(self, request):
        response = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):  # as Django's: the server does the chunking
            response.block_size = self.chunk_size
        return response


django_asgi_app = SiteHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from labs.sandboxes.portproxy import PortOrigin, by_host  # noqa: E402
from labs.routing import websocket_urlpatterns  # noqa: E402
from labs.staticfiles import StaticFiles  # noqa: E402

# Served from memory, with DEBUG off too (labs/staticfiles.py).
http_app = StaticFiles(django_asgi_app, settings.STATIC_URL) if settings.SERVE_STATIC \
    else django_asgi_app

port_origin = PortOrigin()


def warm_up() -> None:
    """Load now what a web process's first requests would: a class arriving
    just after a restart paid it in the requests of its first learners (some
    tens of ms each, per process): the URLconf and the views it imports, the
    static bundles, the digest of the site's code that placing a session
    compares with the hosts', and Celery's task registry, router and
    message sender (the first task sent, a join's start, built them: about
    20 ms)."""
    from django.urls import get_resolver
    from labs.celery import app as celery_app
    from labs.sandboxes.hosts import site_versions
    get_resolver().url_patterns
    site_versions()
    celery_app.tasks, celery_app.amqp.router, celery_app.amqp.send_task_message
    if isinstance(http_app, StaticFiles):
        http_app.warm()


warm_up()

application = ProtocolTypeRouter({
    "http": by_host(port_origin, http_app),
    "websocket": by_host(port_origin, AllowedHostsOriginValidator(AuthMiddlewareStack(
        URLRouter(websocket_urlpatterns)))),
})
