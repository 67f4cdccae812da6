from django.apps import AppConfig


class CoursesConfig(AppConfig):
    name = "labs.courses"
    label = "courses"
    verbose_name = "Lessons"
    default_auto_field = "django.db.models.BigAutoField"
