from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from . import classroom_views as cv
from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("lessons/<slug:slug>/", views.lesson_page, name="lesson"),
    path("lessons/<slug:slug>/start", views.start, name="lesson-start"),
    path("lessons/<slug:slug>/stop", views.stop, name="lesson-stop"),
    path("lessons/<slug:slug>/check", views.check, name="lesson-check"),
    path("lessons/<slug:slug>/steps/<int:number>/answer", views.answer, name="step-answer"),
    path("lessons/<slug:slug>/extend", views.extend, name="lesson-extend"),
    path("lessons/<slug:slug>/hand", views.hand, name="lesson-hand"),
    re_path(r"^nodes/(?P<pk>\d+)/ports/(?P<port>\d+)(?P<rest>/.*)?$", views.open_port,
            name="node-port"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("join/", views.join, name="join"),
    path("join/<str:code>/", views.join, name="join-code"),
    path("classrooms/", cv.classrooms, name="classrooms"),
    path("classrooms/<int:pk>/", cv.classroom, name="classroom"),
    path("classrooms/<int:pk>/grid.json", cv.grid, name="classroom-grid"),
    path("classrooms/<int:pk>/progress.csv", cv.progress_csv, name="classroom-csv"),
    path("classrooms/<int:pk>/message", cv.message, name="classroom-message"),
    path("classrooms/<int:pk>/learners/<int:user_id>/progress.json", cv.learner_progress,
         name="classroom-learner"),
    path("classrooms/<int:pk>/learners/<int:user_id>/lower-hand", cv.lower_hand,
         name="classroom-lower-hand"),
    path("classrooms/<int:pk>/learners/<int:user_id>/reset", cv.reset, name="classroom-reset"),
    path("classrooms/<int:pk>/nodes/<int:node_pk>/watch/", cv.watch, name="classroom-watch"),
    path("accounts/guest/", views.guest, name="guest"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
