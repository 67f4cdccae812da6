"""Moved to labs/labclient.py (the bench uses it too); kept for old imports."""
from labs.labclient import Learner, next_event  # noqa: F401
