"""The operators' admin for lab sessions and their nodes."""
from django.contrib import admin

from .models import LabNode, LabSession, SandboxHost


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


@admin.register(SandboxHost)
class SandboxHostAdmin(admin.ModelAdmin):
    """The sandbox hosts with their load at the last heartbeat. Draining one is
    setting its state to draining (or: manage.py hosts drain NAME)."""
    list_display = ("name", "state", "nodes_now", "room", "max_nodes", "last_seen", "gateway_url",
                    "refused")
    list_filter = ("state",)
    readonly_fields = ("nodes_now", "room", "max_nodes", "memory_free", "last_seen", "host_clock",
                       "version", "recipe", "refused", "joined")
