from django.urls import path

from . import views

urlpatterns = [
    path("lessons/<slug:slug>/hand", views.hand, name="lesson-hand"),
    path("join/", views.join, name="join"),
    path("join/<str:code>/", views.join, name="join-code"),
    path("classrooms/", views.classrooms, name="classrooms"),
    path("classrooms/<int:pk>/", views.classroom, name="classroom"),
    path("classrooms/<int:pk>/grid.json", views.grid, name="classroom-grid"),
    path("classrooms/<int:pk>/progress.csv", views.progress_csv, name="classroom-csv"),
    path("classrooms/<int:pk>/message", views.message, name="classroom-message"),
    path("classrooms/<int:pk>/learners/<int:user_id>/progress.json", views.learner_progress,
         name="classroom-learner"),
    path("classrooms/<int:pk>/learners/<int:user_id>/lower-hand", views.lower_hand,
         name="classroom-lower-hand"),
    path("classrooms/<int:pk>/learners/<int:user_id>/reset", views.reset, name="classroom-reset"),
    path("classrooms/<int:pk>/nodes/<int:node_pk>/watch/", views.watch, name="classroom-watch"),
]
