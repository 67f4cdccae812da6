"""Password hashing that leaves the site responsive while a class signs up.

Django's PBKDF2 hasher costs a quarter of a second of CPU on purpose. Daphne
runs each sign-up or log-in in a thread of its own, and the hash releases the
GIL, so fifty learners signing up at once become fifty threads hashing on
every core, and the event loop that carries everyone's terminal and
websockets gets a fiftieth of the machine: connects then time out. At most
LAB_HASH_CONCURRENCY hashes (default: half the cores, at least one) run at
a time here; the rest wait their turn.

The hashes run in threads of their own at a lower CPU priority (LAB_HASH_NICE,
default 10, added to the site's own niceness): a sign-up can wait a little, while the checks,
node starts and terminals of the learners already in a lesson cannot. With
nothing else to do, a niced hash runs as fast as any.
The stored hashes are Django's own (same algorithm name and format).
"""
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.hashers import PBKDF2PasswordHasher

log = logging.getLogger(__name__)

SLOTS = max(1, int(os.environ.get("LAB_HASH_CONCURRENCY", str((os.cpu_count() or 2) // 2))))
NICE = int(os.environ.get("LAB_HASH_NICE", "10"))


def _lower_priority():
    # On Linux a thread is a task of its own: PRIO_PROCESS with the thread's id
    # renices only this thread (anyone may lower their own priority).
    me = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + NICE))
    except OSError as exc:
        log.warning("could not lower the priority of the hashing thread: %s", exc)


_pool = ThreadPoolExecutor(max_workers=SLOTS, thread_name_prefix="hash",
                           initializer=_lower_priority)


class BoundedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    def encode(self, password, salt, iterations=None):
        encode = super().encode
        return _pool.submit(encode, password, salt, iterations).result()
