from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "labs.accounts"
    label = "accounts"
    verbose_name = "Learners and instructors"
    default_auto_field = "django.db.models.BigAutoField"
