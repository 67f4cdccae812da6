"""ASGI entry point: `daphne labs.asgi:application`.

HTTP goes to Django (with /static/ served straight from the static dirs, so
no collectstatic is needed); websockets go through the origin check and the
auth middleware to the lab consumers. Requests for a port origin,
n<node>-<port>.<LAB_PORTS_DOMAIN> (HTTP and websockets), go to the published-port
proxy (labs.sandboxes.portproxy) instead and never reach the site.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from labs.sandboxes.portproxy import PortOrigin, by_host  # noqa: E402
from labs.routing import websocket_urlpatterns  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

# ASGIStaticFilesHandler serves with insecure=True, so this works with DEBUG off too.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

port_origin = PortOrigin()

application = ProtocolTypeRouter({
    "http": by_host(port_origin, http_app),
    "websocket": by_host(port_origin, AllowedHostsOriginValidator(AuthMiddlewareStack(
        URLRouter(websocket_urlpatterns)))),
})
