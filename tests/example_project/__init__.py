"""A Django project of its own that installs Task Chain as an app, as the README says, with an
app `shop` that declares its own step types. The tests in tests/test_example_project.py run it
in separate processes (web, worker, commands) against the test Redis."""
from tests.example_project.celery import app as celery_app

__all__ = ("celery_app",)
