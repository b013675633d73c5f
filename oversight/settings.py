"""Oversight settings: everything comes from the environment (see README, "Environment").

With no DATABASE_URL / REDIS_URL the embedded PostgreSQL and Redis under var/ are started
(oversight.embedded); with them, those servers are used.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from oversight import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    # Development default: a random key kept under var/ (never in the repository).
    path = embedded.VAR_DIR / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


embedded.ensure_environment(roles=True)

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h for h in env_str("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("DJANGO_CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # pg_trgm indexes on expressions (the review queue's search, reviewqueue 0008)
    "channels",
    "django_htmx",
    "ninja",
    "axes",  # login throttling (AXES_* below)
    "oversight",
    "reviewqueue",
    "dashboards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "oversight.people_audit.ActorMiddleware",
    "oversight.middleware.PagesLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "oversight.middleware.ApiRequestMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: answers a locked-out login
]

ROOT_URLCONF = "oversight.urls"
ASGI_APPLICATION = "oversight.asgi.application"
WSGI_APPLICATION = None

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
                "oversight.access.context_processor",
                "oversight.stopstate.context_processor",
            ],
        },
    },
]


def _login(url: str, name: str = "DATABASE_URL") -> dict[str, str]:
    """Who connects, and to which server: the user, password, host and port of a postgresql:// URL."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"{name} must be a postgresql:// URL, got {parsed.scheme!r}")
    return {
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
    }


def _database(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    login = _login(url)
    pool_max = env_int("DATABASE_POOL_MAX", 10)
    # Fail fast when PostgreSQL is away or stuck: a connection attempt gives up after
    # DATABASE_CONNECT_TIMEOUT_S, a statement after DATABASE_STATEMENT_TIMEOUT_MS (0: none; schema
    # migrations run without one), and the API answers 503 with Retry-After. JIT compilation is off:
    # it added up to ~130 ms to short reporting queries and helps none of ours.
    statement_ms = 0 if "migrate" in sys.argv else env_int("DATABASE_STATEMENT_TIMEOUT_MS", 30000)
    options: dict[str, object] = {
        "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT_S", 2),
        "options": f"-c statement_timeout={statement_ms} -c jit=off",
    }
    if pool_max > 0:
        # Connections opened at start-up and kept: a request that had to wait for a new connection
        # (tens of ms on the bench machine) was the decision endpoint's p99.
        pool_min = min(env_int("DATABASE_POOL_MIN", 4), pool_max)
        options["pool"] = {
            "min_size": pool_min, "max_size": pool_max, "timeout": env_float("DATABASE_POOL_TIMEOUT", 2.0),
        }
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "oversight",
        **login,
        "OPTIONS": options,
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": env_str("DATABASE_TEST_NAME") or None},
    }


# Two database roles (README, "Database roles"): DATABASE_URL is the app's (web, workers, beat), a
# role that reads and writes the tables but owns none of them, so it cannot switch off the audit
# log's protection; DATABASE_OWNER_URL is the owner's, whom `manage.py migrate` logs in as (the
# command is oversight/management/commands/migrate.py). Only its login is used (user, password, host,
# port): migrations run on DATABASE_URL's database, or on the test database made from it. Without it
# the app's own role migrates: one role, which works, but then the app owns the audit log.
DATABASE_URL = os.environ["DATABASE_URL"]
DATABASE_OWNER_URL = env_str("DATABASE_OWNER_URL") or DATABASE_URL
DATABASES = {"default": _database(DATABASE_URL)}
DATABASE_APP_LOGIN = _login(DATABASE_URL)
DATABASE_OWNER_LOGIN = _login(DATABASE_OWNER_URL, "DATABASE_OWNER_URL")
# The role `migrate` grants the app's privileges to; empty with one role.
DATABASE_APP_ROLE = "" if DATABASE_APP_LOGIN["USER"] == DATABASE_OWNER_LOGIN["USER"] else DATABASE_APP_LOGIN["USER"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASE_POOL_TIMEOUT = env_float("DATABASE_POOL_TIMEOUT", 2.0)
# Threads per web process that run requests (oversight/asgi.py); each holds at most one pooled connection.
WEB_THREADS = env_int("OVERSIGHT_WEB_THREADS", 10)

REDIS_URL = os.environ["REDIS_URL"]
# A prefix keeps several deployments (or the test run) apart on one Redis.
REDIS_PREFIX = env_str("OVERSIGHT_REDIS_PREFIX", "oversight")

# Each consumer waits for its next message with a blocking pop of 5 s (channels-redis's
# brpop_timeout). redis-py 8 reads with a 5 s socket_timeout by default, which ended that pop with
# an error and closed every idle page's WebSocket every 5 s; the layer's reads get three times that.
CHANNEL_LAYER_READ_TIMEOUT_S = 15.0
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_READ_TIMEOUT_S}],
                   "prefix": f"{REDIS_PREFIX}:asgi", "capacity": 1000, "expiry": 30},
    }
}

# Live-update pushes are best effort: all of a request's pushes together wait at most this long.
EVENTS_SEND_TIMEOUT_S = env_float("OVERSIGHT_EVENTS_SEND_TIMEOUT_S", 0.5)

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one account from one
# address, that account is locked out from that address for AXES_COOLOFF_TIME (every attempt audited
# by oversight.people_audit; a lock-out as "login.locked"). An admin unlocks sooner with
# `manage.py axes_reset_username NAME` (or axes_reset_ip ADDRESS).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("OVERSIGHT_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("OVERSIGHT_LOGIN_LOCKOUT_MIN", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "lockout.html"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in the audit log already
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("OVERSIGHT_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "oversight.staticfinders.PackageAssetsFinder",
]
WHITENOISE_USE_FINDERS = True  # plotly.js and htmx come from their packages (oversight.staticfinders)
WHITENOISE_AUTOREFRESH = False

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

# API limits
# One body-size limit, Django's own: a larger request body gets a 413 from the API.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("OVERSIGHT_MAX_BODY_BYTES", 4 * 1024 * 1024)
MAX_BATCH_ITEMS = 1000
BENCH_BASELINE = env_bool("OVERSIGHT_BENCH_BASELINE", False)

# Celery: JSON only, prefetch 1, two queues (bulkhead: monitoring can never delay scoring).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "monitoring"
CELERY_TASK_ROUTES = {"oversight.tasks.score": {"queue": "scoring"}, "oversight.tasks.*": {"queue": "monitoring"},
                      "dashboards.tasks.*": {"queue": "monitoring"}, "reviewqueue.tasks.*": {"queue": "monitoring"}}
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 3600
# How a hosted-scoring worker's answer reaches the waiting web process (oversight.scoring): "list",
# a Redis list it blocks on; "result", Celery's result backend. `make bench-scoring` measures both.
SCORING_REPLY = env_str("OVERSIGHT_SCORING_REPLY", "list")
if SCORING_REPLY not in ("list", "result"):
    raise ImproperlyConfigured(f'OVERSIGHT_SCORING_REPLY must be "list" or "result", not {SCORING_REPLY!r}')
# Celery's Django fix-up closes a prefork child's database connections, pool included, around every
# task: a new connection per hosted-scoring task (about 12 ms here). Keep them for this many tasks.
CELERY_DB_REUSE_MAX = env_int("OVERSIGHT_CELERY_DB_REUSE_MAX", 1000)
MONITORING_INTERVAL_S = env_float("OVERSIGHT_MONITORING_INTERVAL_S", 10.0)
DRIFT_INTERVAL_S = env_float("OVERSIGHT_DRIFT_INTERVAL_S", 60.0)
EXPIRY_INTERVAL_S = env_float("OVERSIGHT_EXPIRY_INTERVAL_S", 30.0)  # how often pending decisions may expire
WEBHOOK_GIVE_UP_S = env_float("OVERSIGHT_WEBHOOK_GIVE_UP_S", 86400.0)  # retried for this long, then given up
BREAKER_INTERVAL_S = env_float("OVERSIGHT_BREAKER_INTERVAL_S", 15.0)  # how often breakers are evaluated
CELERY_BEAT_SCHEDULE = {
    # A tick still queued when the next one is due is dropped (expires): a slow first run (a backfill)
    # does not leave a pile of ticks behind it; the next one covers what they would have.
    "route-counts": {"task": "dashboards.tasks.compute_route_counts", "schedule": MONITORING_INTERVAL_S,
                     "options": {"expires": MONITORING_INTERVAL_S}},
    "drift": {"task": "dashboards.tasks.compute_drift", "schedule": DRIFT_INTERVAL_S,
              "options": {"expires": DRIFT_INTERVAL_S}},
    "performance": {"task": "dashboards.tasks.compute_performance", "schedule": DRIFT_INTERVAL_S,
                    "options": {"expires": DRIFT_INTERVAL_S}},
    # After the monitoring jobs and between them: an open breaker's cool-down ends on time.
    "breakers": {"task": "dashboards.tasks.evaluate_breakers", "schedule": BREAKER_INTERVAL_S,
                 "options": {"expires": BREAKER_INTERVAL_S}},
    # Chaos drills end on time (and their reports follow the breaker until it recovers).
    "drills": {"task": "dashboards.tasks.finish_drills", "schedule": 15.0, "options": {"expires": 15.0}},
    # An alert per system while review items wait past their SLA (dashboards.review_alerts).
    "review-overdue": {"task": "dashboards.tasks.review_overdue", "schedule": 30.0, "options": {"expires": 30.0}},
    # Webhook deliveries whose retry was lost are sent again (oversight.webhooks).
    "webhooks": {"task": "oversight.tasks.sweep_webhooks", "schedule": 30.0, "options": {"expires": 30.0}},
    "review-expiry": {"task": "reviewqueue.tasks.expire_pending", "schedule": EXPIRY_INTERVAL_S,
                      "options": {"expires": EXPIRY_INTERVAL_S}},
    # Rollouts advance or roll back on their outcomes; the bandit's shares and posteriors are charted.
    "rollouts": {"task": "dashboards.tasks.run_rollouts", "schedule": 15.0, "options": {"expires": 15.0}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("OVERSIGHT_LOG_LEVEL", "WARNING")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
