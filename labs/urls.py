"""Every page of the site, each app's under its own urls.py (names are global:
templates and tests reverse "lesson", "classroom", "signup" without a prefix)."""
from django.apps import apps
from django.contrib import admin
from django.http import Http404
from django.shortcuts import redirect
from django.urls import include, path, re_path


def moved_admin_page(request, model, rest):
    """/admin/labs/<model>/... from before the split into apps: to the model's new
    admin page (bookmarks and links in old mails keep working)."""
    for app in ("accounts", "courses", "sandboxes", "classrooms"):
        try:
            apps.get_model(app, model)
        except LookupError:
            continue
        query = request.META.get("QUERY_STRING", "")
        return redirect(f"/admin/{app}/{model}/{rest}" + (f"?{query}" if query else ""),
                        permanent=True)
    raise Http404("No such admin page.")


urlpatterns = [
    path("", include("labs.courses.urls")),
    path("", include("labs.sandboxes.urls")),
    path("", include("labs.classrooms.urls")),
    path("", include("labs.accounts.urls")),
    re_path(r"^admin/labs/(?P<model>[a-z]+)/(?P<rest>.*)$", moved_admin_page),
    path("admin/", admin.site.urls),
]
