"""Task Chain's own settings, each with its default: a project sets only those it changes.
`apply_defaults` gives every CHAINS_* name the project did not set its default, before any
model is loaded (chains.apps), so the app reads them as `settings.CHAINS_*` like any setting.
Pure data: the project's settings module may import it for its own defaults."""
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    # Where steps read and write (None: `var/data` beside the project's BASE_DIR).
    "CHAINS_DATA_DIR": None,
    "CHAINS_WRITABLE_DIRS": [],
    "CHAINS_MAX_RUN_WRITE_BYTES": 512 * MIB,
    # The queues steps may name, beside those registered step types declare.
    "CHAINS_QUEUES": ["celery", "math", "data", "io"],
    # A step's soft time limit (s) unless it sets one; the hard limit follows it.
    "CHAINS_STEP_TIME_LIMIT": 300,
    # Must match the broker's visibility timeout: no step may outlive it.
    "CHAINS_VISIBILITY_TIMEOUT": 600,
    # Durability and recovery (see the README's Delivery guarantee).
    "CHAINS_STALL_SECONDS": 600,
    "CHAINS_MAX_RESUMES": 3,
    "CHAINS_PUBLISH_GRACE_SECONDS": 10,
    "CHAINS_MAX_DELIVERIES": 3,
    "CHAINS_HEARTBEAT_SECONDS": 5,
    "CHAINS_WORKER_DEAD_SECONDS": 20,
    "CHAINS_ORPHAN_SECONDS": 15,
    # Bounds on what is accepted and kept.
    "CHAINS_MAX_STEPS": 200,
    "CHAINS_MAX_NUMBERS": 1000,
    "CHAINS_MAX_ABS_NUMBER": 1e15,
    "CHAINS_MAX_ITERATIONS": 100,
    "CHAINS_MAX_FILE_BYTES": 100 * MIB,
    "CHAINS_MAX_READ_BYTES": 64 * 1024,
    "CHAINS_MAX_CSV_FIELD_BYTES": 64 * 1024,
    "CHAINS_MAX_CSV_COLUMNS": 1000,
    "CHAINS_MAX_JSON_DEPTH": 32,
    "CHAINS_MAX_INPUT_BYTES": 64 * 1024,
    "CHAINS_MAX_RESULT_BYTES": MIB,
    "CHAINS_MAX_STEP_LOG_BYTES": MIB,
    "CHAINS_MAX_DESCRIPTION_CHARS": 10_000,
    "CHAINS_MAX_PAGE_SIZE": 200,
    # Workflows: the items one map step runs over, and how deep sub-chains nest.
    "CHAINS_MAX_MAP_ITEMS": 10_000,
    "CHAINS_MAX_DEPTH": 5,
    # Per user (0: no limit).
    "CHAINS_MAX_ACTIVE_RUNS_PER_USER": 20,
    "CHAINS_MAX_SCHEDULES_PER_USER": 10,
    "CHAINS_MIN_INTERVAL_SECONDS": 60,
    "CHAINS_IDEMPOTENCY_SECONDS": 24 * 3600,
    # API rates: anonymous requests and wrong tokens per address, and each user's requests.
    "CHAINS_API_RATE_ANON": "60/min",
    "CHAINS_API_RATE_USER": "6000/min",
    # The bearer token /metrics asks for ("": only signed-in staff may read it).
    "CHAINS_METRICS_TOKEN": "",
    # Notifications: links in them start with the site's URL; webhooks are https to public
    # addresses unless allowed here; a delivery is retried with exponential backoff.
    "CHAINS_SITE_URL": "http://127.0.0.1:8000",
    "CHAINS_WEBHOOK_ALLOW_HTTP": False,
    "CHAINS_WEBHOOK_ALLOWED_HOSTS": [],
    "CHAINS_WEBHOOK_TIMEOUT": 5,
    "CHAINS_NOTIFY_MAX_RETRIES": 5,
    "CHAINS_NOTIFY_BACKOFF_SECONDS": 10,
    "CHAINS_NOTIFY_BACKOFF_MAX_SECONDS": 300,
    # Sign-in lockout.
    "CHAINS_LOGIN_FAILURES": 5,
    "CHAINS_LOGIN_FAILURES_PER_ADDRESS": 20,
    "CHAINS_LOGIN_LOCK_SECONDS": 900,
}


def apply_defaults(settings: Any) -> None:
    """Give each CHAINS_* setting the project did not set its default."""
    for name, value in DEFAULTS.items():
        if not hasattr(settings, name):
            if name == "CHAINS_DATA_DIR":
                value = Path(getattr(settings, "BASE_DIR", ".")) / "var" / "data"
            setattr(settings, name, value)
