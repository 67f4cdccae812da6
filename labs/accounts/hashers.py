"""Password hashing that leaves the site responsive while a class signs up.

Django's PBKDF2 hasher costs a quarter of a second of CPU on purpose. Daphne
runs each sign-up or log-in in a thread of its own, and the hash releases the
GIL, so fifty learners signing up at once become fifty threads hashing on
every core, and the event loop that carries everyone's terminal and
websockets gets a fiftieth of the machine: connects then time out. At most
LAB_HASH_CONCURRENCY hashes (default: half the cores, at least one) run at
a time here; the rest wait their turn.
The stored hashes are Django's own (same algorithm name and format).
"""
import os
import threading

from django.contrib.auth.hashers import PBKDF2PasswordHasher

_slots = threading.BoundedSemaphore(
    max(1, int(os.environ.get("LAB_HASH_CONCURRENCY", str((os.cpu_count() or 2) // 2)))))


class BoundedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    def encode(self, password, salt, iterations=None):
        with _slots:
            return super().encode(password, salt, iterations)
