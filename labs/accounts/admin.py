"""The operators' admin for users: the guest flag and the instructor role.

The instructor role is the "instructors" group (made by a migration): open a
user, add "instructors" under Groups, save. Staff status is not needed for it.
"""
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from .models import Profile, is_instructor

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
