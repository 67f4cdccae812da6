from django.apps import AppConfig


class LabsConfig(AppConfig):
    """The project package as an app: it holds only the migrations of the days the
    site was one app (0001-0004) and the one that handed its models to the apps
    (0005). It has no models of its own."""

    name = "labs"
    verbose_name = "Docker labs"
    default_auto_field = "django.db.models.BigAutoField"
