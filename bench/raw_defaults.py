"""A plain Celery app at Celery's defaults: the broker and the stock django-celery-results
backend ("django-db"), nothing else set (default prefetch, early acknowledgement, no events,
no time limits). What a team that runs Celery today compares the project with."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUE = "bench-defaults"

app = Celery("bench_raw_defaults",
             broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6390/0"),
             backend="django-db", set_as_current=False)  # the project publishes with its own
app.conf.task_default_queue = QUEUE


@app.task(name="bench.defaults_noop")
def noop(previous=None):
    return previous
