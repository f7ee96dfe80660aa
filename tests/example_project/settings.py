"""Settings of a plain project (as `django-admin startproject` makes them), with the lines the
README's "Add Task Chain to an existing project" adds. Paths and the broker come from the
environment the tests give."""
import os
from pathlib import Path

BASE_DIR = Path(os.environ["EXAMPLE_DIR"])
SECRET_KEY = "example-project-only-for-tests"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # What the README adds:
    "rest_framework", "rest_framework.authtoken", "drf_spectacular", "drf_spectacular_sidecar",
    "django_celery_results", "django_celery_beat", "django_jsonform", "auditlog", "chains",
    # The project's own app, with its step types.
    "tests.example_project.shop",
    # A startup test adds a broken app here.
    *filter(None, [os.environ.get("EXAMPLE_BROKEN_APP")]),
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # What the README adds:
    "chains.middleware.AuditMiddleware",
]
ROOT_URLCONF = "tests.example_project.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3",
                         "OPTIONS": {"timeout": 20}}}
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = os.environ["EXAMPLE_BROKER_URL"]
CELERY_RESULT_BACKEND = "chains.results:ResultBackend"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {"reconcile": {"task": "chains.reconcile_runs", "schedule": 10}}

CHAINS_DATA_DIR = BASE_DIR / "data"
