"""The operators' admin for lab sessions and their nodes."""
from django.contrib import admin

from .models import LabNode, LabSession


class LabNodeInline(admin.TabularInline):
    model = LabNode
    extra = 0
    readonly_fields = ("name", "runtime_id", "state", "error", "ports")


@admin.register(LabSession)
class LabSessionAdmin(admin.ModelAdmin):
    list_display = ("runtime_name", "user", "lesson", "state", "created", "expires", "last_input",
                    "ended_because")
    list_filter = ("state", "lesson")
    inlines = [LabNodeInline]
