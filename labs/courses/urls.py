from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("lessons/<slug:slug>/", views.lesson_page, name="lesson"),
    path("lessons/<slug:slug>/steps/<int:number>/answer", views.answer, name="step-answer"),
    path("lessons/<slug:slug>/steps/<int:number>/reveal", views.reveal, name="step-reveal"),
    path("dashboard/", views.dashboard, name="dashboard"),
]
