"""The operators' admin for lessons, steps and learners' progress."""
from django.contrib import admin

from .models import Lesson, LessonActivity, Step, StepProgress


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    fields = ("number", "name", "title", "node")
    readonly_fields = fields
    show_change_link = True


@admin.register(Lesson)
class LessonAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "order", "minutes", "node_names")
    inlines = [StepInline]


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ("lesson", "number", "title", "node")
    list_filter = ("lesson",)


@admin.register(StepProgress)
class StepProgressAdmin(admin.ModelAdmin):
    list_display = ("user", "step", "state", "done_at", "checked_at")
    list_filter = ("state", "step__lesson")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


@admin.register(LessonActivity)
class LessonActivityAdmin(admin.ModelAdmin):
    list_display = ("user", "lesson", "started", "last")
    list_filter = ("lesson",)
