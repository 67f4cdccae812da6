"""Sign-up (a guest signing up keeps their progress) and "Try as a guest"."""
from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .models import Profile, is_guest


def signup(request):
    """Sign up; a guest signing up keeps their user (and so their progress and classrooms)."""
    guest = request.user if is_guest(request.user) else None
    if request.method == "POST":
        form = UserCreationForm(request.POST, instance=guest) if guest else UserCreationForm(request.POST)
        if form.is_valid():
            # Hash the password first: inside the transaction it would hold
            # SQLite's write lock for the whole hash (and its wait for a
            # hashing slot), and a class signing up at once would time out.
            user = form.save(commit=False)
            with transaction.atomic():
                user.save()
                form.save_m2m()
                if guest:
                    Profile.objects.filter(user=user).update(guest=False)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(_next_url(request, "dashboard"))
    else:
        form = UserCreationForm()
        if guest:
            form.initial["username"] = ""
    return render(request, "registration/signup.html", {"form": form, "guest": guest,
                                                        "next": request.GET.get("next", "")})


def _next_url(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse(default)


@require_POST
def guest(request):
    """Try as a guest: a real user, flagged guest, logged in at once."""
    if not request.user.is_authenticated:
        user = Profile.make_guest()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect(_next_url(request, "dashboard"))
