from django.apps import AppConfig


class LabsConfig(AppConfig):
    name = "labs"
    verbose_name = "Docker labs"
    default_auto_field = "django.db.models.BigAutoField"
