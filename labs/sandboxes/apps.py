from django.apps import AppConfig


class SandboxesConfig(AppConfig):
    name = "labs.sandboxes"
    label = "sandboxes"
    verbose_name = "Lab machines"
    default_auto_field = "django.db.models.BigAutoField"
