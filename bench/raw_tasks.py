"""Plain Celery tasks for the raw side of the benchmarks (loaded by the bench worker only)."""
from config.celery import app


@app.task(name="bench.noop")
def noop(previous=None):
    return previous
