"""A plain Celery app for the recovery benchmark: the project's broker and Celery settings,
stock django-db results, its own queue, and a visibility timeout of RAW_VISIBILITY_TIMEOUT
(a tenth of the shipped 600 s, so that the benchmark ends in minutes)."""
import os
import time

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUE = "bench-recovery"
RAW_VISIBILITY_TIMEOUT = 60

app = Celery("bench_raw_recovery", set_as_current=False)  # the project publishes with its own
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.result_backend = "django-db"
app.conf.task_default_queue = QUEUE
app.conf.broker_transport_options = {
    "visibility_timeout": RAW_VISIBILITY_TIMEOUT,
    "unacked_restore_interval": max(1, RAW_VISIBILITY_TIMEOUT // 20),
}


@app.task(name="bench.recovery_wait")
def wait(previous=None, seconds: float = 0):
    time.sleep(seconds)
    return previous


@app.task(name="bench.recovery_add")
def add(previous=0, number: int = 0):
    return previous + number
