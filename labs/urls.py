from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("lessons/<slug:slug>/", views.lesson_page, name="lesson"),
    path("lessons/<slug:slug>/start", views.start, name="lesson-start"),
    path("lessons/<slug:slug>/stop", views.stop, name="lesson-stop"),
    path("lessons/<slug:slug>/check", views.check, name="lesson-check"),
    path("lessons/<slug:slug>/steps/<int:number>/answer", views.answer, name="step-answer"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
