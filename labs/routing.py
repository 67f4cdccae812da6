from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/lessons/<slug:slug>/", consumers.LessonConsumer.as_asgi()),
    path("ws/nodes/<int:node>/terminal/", consumers.TerminalConsumer.as_asgi()),
    path("ws/classrooms/<int:pk>/", consumers.ClassroomConsumer.as_asgi()),
    path("ws/classrooms/<int:pk>/nodes/<int:node>/watch/", consumers.WatchConsumer.as_asgi()),
]
