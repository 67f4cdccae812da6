"""Settings for the lab site, read from the environment.

Defaults run on one machine: SQLite under var/, Redis on localhost, the
built-in runtime driver. Every helper fails loudly on a value it cannot parse.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from labs.oslimits import raise_open_file_limit

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1/0, true/false, yes/no or on/off")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None


def envlist(name: str, default: str) -> list:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Settings are read by every process of the site (Daphne, the workers, beat).
raise_open_file_limit()

DEV_SECRET_KEY = "dev-only-insecure-secret-key-set-SECRET_KEY-in-production"
SECRET_KEY = env("SECRET_KEY", DEV_SECRET_KEY)
SECRET_KEY_IS_DEV_DEFAULT = SECRET_KEY == DEV_SECRET_KEY
DEBUG = envbool("DEBUG", "0")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # The project package keeps the migrations of the days it was one app
    # (0001-0004); 0005 hands its models to the apps below, tables unchanged.
    "labs",
    "labs.accounts",      # sign-up, guests, the instructor role
    "labs.courses",       # lessons, steps, quizzes, progress
    "labs.sandboxes",     # lab sessions, nodes, terminals, checks, published ports
    "labs.classrooms",    # classrooms, the live grid and reports, watching
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Database sessions, one write fewer per login (labs/accounts/sessions.py says why).
SESSION_ENGINE = "labs.accounts.sessions"

ROOT_URLCONF = "labs.urls"
ASGI_APPLICATION = "labs.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labs.accounts.context.roles",
            ],
        },
    },
]

def database_from_url(url: str) -> dict:
    """DATABASES["default"] for a DATABASE_URL such as
    postgresql://lab:secret@db.example.org:5432/lab (a host may also be a
    socket directory: postgresql:///lab?host=/run/postgresql)."""
    from urllib.parse import parse_qs, unquote, urlsplit
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r}: expected postgresql://USER:PASSWORD@HOST:PORT/NAME")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.strip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.pop("host", parts.hostname or ""),
        "PORT": str(parts.port or ""),
        # Each process (Daphne, every worker) holds its own connections; a
        # dead server fails a request in seconds rather than hanging it.
        "OPTIONS": {"connect_timeout": int(query.pop("connect_timeout", "5")), **query},
    }


# One machine: SQLite under var/. Many machines (sandbox hosts whose workers
# write progress): one PostgreSQL server, DATABASE_URL.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DB_PATH = Path(env("DB_PATH", str(BASE_DIR / "var" / "db.sqlite3")))
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            # Django's SQLite backend, with writers taking turns (labs/dbsqlite).
            "ENGINE": "labs.dbsqlite",
            "NAME": DB_PATH,
            # Celery workers and Daphne write concurrently: wait for the lock
            # instead of failing at once. Write-ahead logging lets readers go on
            # while one writes, and synchronous=NORMAL commits without waiting for
            # the disk (the database stays consistent; a power cut may lose the
            # last commits): with a class at once, a check's verdict waited longer
            # for the write lock than for the check itself.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
# Connections stay open between uses (5 minutes at most): a new SQLite
# connection costs about 2 ms of CPU (Django sets each one up), and the
# sockets' database calls and the workers' tasks each opened one. HTTP
# requests run on a thread of their own each, so their connections are closed
# when the request ends (labs/asgi.py: SiteHandler).
DATABASES["default"]["CONN_MAX_AGE"] = envint("LAB_DB_CONN_MAX_AGE", "300")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's own hashers, the default one bounded in how many run at once.
PASSWORD_HASHERS = [
    "labs.accounts.hashers.BoundedPBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"
# Daphne serves /static/ itself (labs.asgi), even with DEBUG off.
SERVE_STATIC = envbool("SERVE_STATIC", "1")

# The lab runs its own redis-server (Procfile) on a port of its own, so a
# system Redis that Debian's package may have started on 6379 never clashes.
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6390/0")

CHANNEL_LAYER = env("CHANNEL_LAYER", "redis")
if CHANNEL_LAYER == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif CHANNEL_LAYER == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same
            # as channels_redis's blocking receive (BZPOPMIN, 5 s): every idle
            # consumer then dies with "Timeout reading from ...". Read longer.
            # redis-py 8 caps a pool at 100 connections by default and then
            # fails ("Too many connections"): a hundred open terminals plus
            # their lesson sockets, group_add and group_send need more at once.
            # After Redis restarts, every pooled connection is dead; redis-py
            # (asyncio) does not retry by default, so the first command on each
            # failed and took its socket down (HTTP 500 on connect, dropped
            # pages). Reconnect and retry for up to about 3 s instead. Redis
            # keeps its data over a restart (Procfile: saved on shutdown), so
            # a socket that lives on is still in its groups.
            "CONFIG": {"hosts": [{"address": REDIS_URL,
                                  "socket_timeout": envint("REDIS_SOCKET_TIMEOUT", "30"),
                                  "max_connections": envint("REDIS_MAX_CONNECTIONS", "2000"),
                                  "retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), 5),
                                  "retry_on_error": [RedisConnectionError]}]},
        }
    }
else:
    raise ImproperlyConfigured(f"CHANNEL_LAYER={CHANNEL_LAYER!r}: use 'redis' or 'memory'")

# Celery (labs/celery.py reads every CELERY_* setting).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", "150")
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "180")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "0")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Node work (starting, stopping, the pool) takes seconds; checks take tens of
# milliseconds and a learner is waiting on each. Separate queues, served by
# separate workers (Procfile), so checks never wait behind a class starting.
# A session's tasks go to its host's queues (nodes.<host>, checks.<host>);
# the site's own tasks to "celery". See labs/sandboxes/hosts.py.
CELERY_TASK_ROUTES = ("labs.sandboxes.hosts.route",)
CELERY_BEAT_SCHEDULE = {
    # Each host reaps and refills its own pool: beat asks every live host.
    "reap-nodes": {"task": "labs.sandboxes.tasks.on_every_host", "args": ("reap_nodes",),
                   "schedule": float(envint("LAB_REAP_SECONDS", "300"))},
    "start-queued": {"task": "labs.sandboxes.tasks.start_queued",
                     "schedule": float(envint("LAB_QUEUE_SECONDS", "5"))},
    "maintain-pool": {"task": "labs.sandboxes.tasks.on_every_host", "args": ("maintain_pool",),
                      "schedule": float(envint("LAB_POOL_SECONDS", "15"))},
    "end-sessions": {"task": "labs.sandboxes.tasks.end_sessions",
                     "schedule": float(envint("LAB_END_SESSIONS_SECONDS", "60"))},
    "lose-dead-hosts": {"task": "labs.sandboxes.tasks.lose_dead_hosts",
                        "schedule": float(envint("LAB_HOST_HEARTBEAT_SECONDS", "5"))},
    "remove-stale-guests": {"task": "labs.accounts.tasks.remove_stale_guests", "schedule": 3600.0},
    "prune-saves": {"task": "labs.sandboxes.tasks.prune_saves", "schedule": 3600.0},
}
# Guest users idle this many days (and in no classroom) are deleted with
# their progress (0: keep every guest).
LAB_GUEST_DAYS = envint("LAB_GUEST_DAYS", "30")

# Session limits. A learner's lab session ends LAB_SESSION_MINUTES after it
# started (Extend adds LAB_EXTEND_MINUTES), or after LAB_IDLE_MINUTES without
# terminal input; beat (end_sessions) then stops its nodes. Progress stays.
LAB_SESSION_MINUTES = envint("LAB_SESSION_MINUTES", "120")
LAB_EXTEND_MINUTES = envint("LAB_EXTEND_MINUTES", "30")
LAB_IDLE_MINUTES = envint("LAB_IDLE_MINUTES", "30")
# The lesson page warns this long before the session ends.
LAB_SESSION_WARN_MINUTES = envint("LAB_SESSION_WARN_MINUTES", "5")
# Live nodes one learner may have at once, over all their lessons.
LAB_NODES_PER_LEARNER = envint("LAB_NODES_PER_LEARNER", "3")
# The instructor's grid flags a learner on the same step for longer than this.
LAB_STUCK_MINUTES = envint("LAB_STUCK_MINUTES", "10")
# Terminal recordings (runtime/recorder.py, run by each host's `recorder`
# process, which reads the same variables): on unless LAB_RECORD=0; each
# session's recordings capped at LAB_RECORD_MB (oldest output dropped first)
# and deleted LAB_RECORD_DAYS after their last write.
LAB_RECORD = env("LAB_RECORD", "1") != "0"
LAB_RECORD_MB = envint("LAB_RECORD_MB", "20")
LAB_RECORD_DAYS = envint("LAB_RECORD_DAYS", "30")

# Saved machines (runtime/saves.py): when a session ends, each node's state is
# kept (LAB_SAVE=0: not), within LAB_SAVE_MB per learner, for LAB_SAVE_DAYS;
# the next Start offers to resume it. Saves live in $LAB_SAVE_DIR (default
# <runtime dir>/saves), which every sandbox host must share.
LAB_SAVE = env("LAB_SAVE", "1") != "0"
LAB_SAVE_MB = envint("LAB_SAVE_MB", "2048")
LAB_SAVE_DAYS = envint("LAB_SAVE_DAYS", "14")
# Ready nodes kept waiting so Start is near instant (0: start every node cold).
LAB_POOL_SIZE = envint("LAB_POOL_SIZE", "2")
# From this long before a classroom starts until LAB_POOL_HOLD_MINUTES after,
# the pools also hold a ready machine for each learner it expects
# (labs/sandboxes/pools.py).
LAB_POOL_CLASSES = env("LAB_POOL_CLASSES", "1") != "0"  # 0: the schedule is not looked at
LAB_POOL_LEAD_MINUTES = envint("LAB_POOL_LEAD_MINUTES", "10")
LAB_POOL_HOLD_MINUTES = envint("LAB_POOL_HOLD_MINUTES", "15")

# The runtime library reads LAB_DRIVER itself; keep the value here so the site
# can show it and tests can see which driver is meant.
# Published ports of a node open on an origin of their own,
# n<node>-<port>.<LAB_PORTS_DOMAIN>, so a learner's app never runs with the
# site's origin. Browsers send every *.localhost name to the loopback address,
# so the default needs no DNS; with a real domain, point a wildcard record
# (*.ports.example.org) at the site and set LAB_PORTS_DOMAIN=ports.example.org.
LAB_PORTS_DOMAIN = env("LAB_PORTS_DOMAIN", "localhost").strip(".").lower()
if not re.fullmatch(r"[a-z0-9.-]+", LAB_PORTS_DOMAIN):
    raise ImproperlyConfigured("LAB_PORTS_DOMAIN must be a DNS name, for example ports.example.org")
# How long a port origin's cookie lets its holder in (the owner and instructors
# are checked again on every request).
LAB_PORTS_COOKIE_HOURS = envint("LAB_PORTS_COOKIE_HOURS", "12")

# Sandbox hosts (labs/sandboxes/hosts.py). This machine's name as a host: the
# site's own machine is a host too (the embedded one), with no set-up.
LAB_HOST_NAME = env("LAB_HOST_NAME", "local")
if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", LAB_HOST_NAME):
    raise ImproperlyConfigured("LAB_HOST_NAME must be lower-case letters, digits and dashes")
# A host silent for this long is lost: its sessions end, their learners may start elsewhere.
LAB_HOST_TIMEOUT = envint("LAB_HOST_TIMEOUT", "15")
LAB_HOST_HEARTBEAT_SECONDS = envint("LAB_HOST_HEARTBEAT_SECONDS", "5")
# Where this host's gateway serves terminals and published ports ("" : the site does).
LAB_GATEWAY_URL = env("LAB_GATEWAY_URL", "")
# Gateway tokens (labs/sandboxes/gateway.py): the key every host shares with
# the site ("" derives one from SECRET_KEY), and how long a token opens a socket.
LAB_GATEWAY_KEY = env("LAB_GATEWAY_KEY", "")
LAB_GATEWAY_TOKEN_SECONDS = envint("LAB_GATEWAY_TOKEN_SECONDS", "60")
# Joining hosts (`python -m runtime host join`): how long a join token works,
# and the Redis and database addresses hosts use ("" : REDIS_URL, DATABASE_URL).
LAB_JOIN_TOKEN_HOURS = envint("LAB_JOIN_TOKEN_HOURS", "24")
LAB_HOSTS_REDIS_URL = env("LAB_HOSTS_REDIS_URL", "")
LAB_HOSTS_DATABASE_URL = env("LAB_HOSTS_DATABASE_URL", "")

LAB_DRIVER = env("LAB_DRIVER", "builtin")
# Runtime session names are this prefix plus the LabSession id. Two sites (say
# the lab and a test run) sharing one machine's runtime need different prefixes.
LAB_SESSION_PREFIX = env("LAB_SESSION_PREFIX", "s")
if not LAB_SESSION_PREFIX.isalpha() or not LAB_SESSION_PREFIX.islower():
    raise ImproperlyConfigured("LAB_SESSION_PREFIX must be lower-case letters")
os.environ.setdefault("LAB_DRIVER", LAB_DRIVER)

# Where lesson directories live (labs/courses/content/<slug>/lesson.toml).
LESSONS_DIR = Path(env("LESSONS_DIR", str(BASE_DIR / "labs" / "courses" / "content")))

LOG_LEVEL = env("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
    },
}

if SECRET_KEY_IS_DEV_DEFAULT and not DEBUG:
    import logging

    logging.getLogger(__name__).warning(
        "SECRET_KEY is the built-in development key: set SECRET_KEY before exposing this site"
    )
