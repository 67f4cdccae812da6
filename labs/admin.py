"""The operators' admin: users (with the guest flag and the instructor role),
classrooms with their learners, lessons, sessions and progress.

The instructor role is the "instructors" group (made by a migration): open a
user, add "instructors" under Groups, save. Staff status is not needed for it.
"""
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from .models import (ClassMessage, Classroom, LabNode, LabSession, Lesson, LessonActivity,
                     Membership, Profile, Step, StepProgress, is_instructor)

User = get_user_model()


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    extra = 0


class LabUserAdmin(UserAdmin):
    inlines = [ProfileInline]
    list_display = ("username", "email", "instructor", "guest", "is_staff", "last_login", "date_joined")
    list_filter = UserAdmin.list_filter + ("lab_profile__guest",)

    @admin.display(boolean=True)
    def instructor(self, user):
        return is_instructor(user)

    @admin.display(boolean=True)
    def guest(self, user):
        profile = getattr(user, "lab_profile", None)
        return bool(profile and profile.guest)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, LabUserAdmin)


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


@admin.register(ClassMessage)
class ClassMessageAdmin(admin.ModelAdmin):
    list_display = ("classroom", "sender", "to_user", "sent", "text")
