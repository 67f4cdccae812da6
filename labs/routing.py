"""Every websocket of the site (each app keeps its consumers)."""
from django.urls import path

from labs.classrooms.consumers import ClassroomConsumer, WatchConsumer
from labs.sandboxes.consumers import LessonConsumer, TerminalConsumer

websocket_urlpatterns = [
    path("ws/lessons/<slug:slug>/", LessonConsumer.as_asgi()),
    path("ws/nodes/<int:node>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/classrooms/<int:pk>/", ClassroomConsumer.as_asgi()),
    path("ws/classrooms/<int:pk>/nodes/<int:node>/watch/", WatchConsumer.as_asgi()),
]
