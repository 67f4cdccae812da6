"""Template context: the user's role, for the top bar."""
from .models import is_guest, is_instructor


def roles(request):
    user = getattr(request, "user", None)
    return {"is_instructor": is_instructor(user), "is_guest": is_guest(user)}
