"""Moved to labs/livesite.py (the bench uses it too); kept for old imports."""
from labs.livesite import *  # noqa: F401,F403
from labs.livesite import LiveSite, SESSION_PREFIX, live_site, remove_test_nodes  # noqa: F401
