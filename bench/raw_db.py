"""A plain Celery app with the stock django-celery-results backend ("django-db"): the chains'
reference. Same broker, database and Celery settings as the project; its own queue."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUE = "bench-db"

app = Celery("bench_raw_db", set_as_current=False)  # the project publishes with its own
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.result_backend = "django-db"
app.conf.task_default_queue = QUEUE


@app.task(name="bench.db_noop")
def noop(previous=None):
    return previous
