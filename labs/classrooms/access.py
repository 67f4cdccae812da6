"""Who may see a learner's node besides its owner: the instructors teaching them.

Lives with the classrooms because the rule is theirs; the sandboxes' port
proxy and views ask here.
"""
from __future__ import annotations

from labs.sandboxes.models import LabNode

from .models import Classroom


def watchable_node(user, pk):
    """The node `pk` if `user` is an instructor of a classroom its owner is in, else None."""
    if user is None or not user.is_authenticated:
        return None
    node = (LabNode.objects.select_related("session", "session__lesson", "session__user")
            .filter(pk=pk).first())
    if node is None or not Classroom.teaching(user, node.session.user_id):
        return None
    return node


def visible_node(user, pk):
    """The node `pk` if `user` owns it or teaches its owner (port links), else None."""
    return LabNode.owned(user, pk) or watchable_node(user, pk)
