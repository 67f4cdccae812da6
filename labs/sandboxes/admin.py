"""The operators' admin for lab sessions and their nodes."""
from django.conf import settings
from django.contrib import admin

from . import machines
from .models import LabNode, LabSession, SandboxHost, SavedMachine


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


@admin.register(SavedMachine)
class SavedMachineAdmin(admin.ModelAdmin):
    """Learners' saved machines (labs/sandboxes/machines.py): size, and each
    learner's use of their LAB_SAVE_MB. Deleting one here deletes its data."""
    list_display = ("user", "lesson", "node_name", "state", "size_mb", "learner_use", "saved_at",
                    "message")
    list_filter = ("state", "lesson")
    search_fields = ("user__username",)
    readonly_fields = ("user", "lesson", "node_name", "state", "size", "saved_at", "message")

    @admin.display(description="size (MB)")
    def size_mb(self, obj):
        return f"{obj.size / 2**20:.1f}"

    @admin.display(description="learner's use")
    def learner_use(self, obj):
        used = SavedMachine.used_bytes(obj.user) / 2**20
        return f"{used:.0f} of {settings.LAB_SAVE_MB} MB"

    def delete_model(self, request, obj):
        machines.discard(obj.user, obj.lesson, obj.node_name)

    def delete_queryset(self, request, queryset):
        for obj in queryset.select_related("lesson", "user"):
            machines.discard(obj.user, obj.lesson, obj.node_name)
