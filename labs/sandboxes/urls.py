from django.urls import path, re_path

from . import hostapi, views

urlpatterns = [
    path("lessons/<slug:slug>/start", views.start, name="lesson-start"),
    path("lessons/<slug:slug>/stop", views.stop, name="lesson-stop"),
    path("lessons/<slug:slug>/check", views.check, name="lesson-check"),
    path("lessons/<slug:slug>/extend", views.extend, name="lesson-extend"),
    path("nodes/<int:pk>/terminal", views.terminal_url, name="node-terminal"),
    path("replays/<int:pk>/", views.replay, name="replay"),
    path("replays/<int:pk>/<str:name>.cast", views.replay_cast, name="replay-cast"),
    path("hosts/join", hostapi.join, name="host-join"),
    path("hosts/", hostapi.host_list, name="host-list"),
    re_path(r"^nodes/(?P<pk>\d+)/ports/(?P<port>\d+)(?P<rest>/.*)?$", views.open_port,
            name="node-port"),
]
