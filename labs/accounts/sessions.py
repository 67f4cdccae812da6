"""Django's database sessions, without two writes and a query that a login
of a new visitor paid for nothing (a class of forty joining at once pays
them forty times, inside the join link's request).

- A new session key is not first looked up: saving a new session inserts
  its row (must_create), and a key already taken fails that insert, after
  which Django's create() tries another. The lookup guarded against nothing
  the insert does not.
- Logging in a visitor whose session has no key yet changes no key: Django's
  cycle_key() inserts an empty row under a new key, and the end of the
  request then updates it with the login. A session without a key gets a
  new one when it is first saved, so the login is one insert. (A key the
  visitor brought is changed as before: that is what stops session
  fixation.)
"""
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.utils.crypto import get_random_string


class SessionStore(DatabaseStore):
    def _get_new_session_key(self):
        return get_random_string(32, VALID_KEY_CHARS)

    async def _aget_new_session_key(self):
        return self._get_new_session_key()

    def cycle_key(self):
        if self.session_key is None:
            self.modified = True  # saved, under a new key, at the end of the request
            return
        super().cycle_key()

    async def acycle_key(self):
        if self.session_key is None:
            self.modified = True
            return
        await super().acycle_key()
