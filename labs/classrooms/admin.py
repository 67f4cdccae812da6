"""The operators' admin for classrooms, their learners and messages."""
from django.contrib import admin

from .models import ClassMessage, Classroom, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    readonly_fields = ("joined",)
    raw_id_fields = ("user",)


@admin.register(Classroom)
class ClassroomAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "code", "starts", "ends", "learner_count")
    search_fields = ("name", "code", "owner__username")
    filter_horizontal = ("lessons",)
    inlines = [MembershipInline]

    @admin.display(description="learners")
    def learner_count(self, room):
        return room.memberships.count()


@admin.register(ClassMessage)
class ClassMessageAdmin(admin.ModelAdmin):
    list_display = ("classroom", "sender", "to_user", "sent", "text")
