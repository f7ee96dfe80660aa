"""A plain Celery app with the Redis result backend: the reference of the fan-out and of the
map. Same broker and Celery settings as the project, only the result backend differs."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUE = "bench-redis"

app = Celery("bench_raw_redis", set_as_current=False)  # the project publishes with its own
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.result_backend = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
app.conf.task_default_queue = QUEUE


@app.task(name="bench.redis_noop")
def noop(previous=None):
    return previous


@app.task(name="bench.redis_double")
def double(item):
    return 2 * item
