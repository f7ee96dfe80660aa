"""Fixtures: users and API clients, a data directory, and for the tests that ask for them a
real Redis (`broker`) and real Celery workers writing to the test database."""
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from config.celery import app as celery_app
from tests.factories import make_user, token_client
from tests.services import (
    DATA_DIR,
    CeleryBeat,
    CeleryWorker,
    EmbeddedRedis,
    purge_queues,
    worker_env,
)

_redis: EmbeddedRedis | None = None


# Where tests publish when none of the selected tests asks for a broker: nothing listens
# there, so a test that publishes without the `broker` fixture fails at once instead of
# reaching some other Redis.
NO_BROKER = "redis://127.0.0.1:1/0"


def pytest_configure(config) -> None:
    """Point the test process at the test data directory, and at no broker until the
    collection says whether a test asks for one (unit tests run without Redis)."""
    settings.CHAINS_DATA_DIR = DATA_DIR
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    _use_broker(NO_BROKER)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    """Once the tests to run are known (after -m and -k), and before any runs: a real Redis
    if one of them asks for the `broker` fixture (REDIS_URL when given, else an embedded
    one). The broker is chosen once, before any connection to it is pooled."""
    global _redis
    if not any("broker" in item.fixturenames for item in items):
        return
    url = os.environ.get("REDIS_URL")
    if not url:
        _redis = EmbeddedRedis()
        url = _redis.url
    _use_broker(url)


def _use_broker(url: str) -> None:
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    celery_app.conf.broker_url = url


@pytest.fixture(scope="session")
def broker() -> str:
    """The real Redis of the tests that ask for one (started when the tests were collected)."""
    assert settings.CELERY_BROKER_URL != NO_BROKER, "no broker was started for this test"
    return settings.CELERY_BROKER_URL


def pytest_unconfigure(config) -> None:
    if _redis is not None:
        _redis.stop()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Throttles and sign-in counters live in the cache: each test starts without them."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def data_dir() -> Path:
    """The data directory shared with the worker, emptied after each test."""
    yield DATA_DIR
    for child in DATA_DIR.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@pytest.fixture(scope="module")
def celery_worker(broker, django_db_setup, django_db_blocker, tmp_path_factory):
    """A real prefork worker consuming every queue, on the test Redis and test database,
    for the tests of one module."""
    purge_queues(celery_app)  # nothing left over from earlier tests
    worker = CeleryWorker(env=worker_env(),
                          log_path=tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def start_worker(broker, django_db_setup, tmp_path):
    """Start workers for one test (each with its own log); all are stopped afterwards."""
    started: list[CeleryWorker] = []
    purge_queues(celery_app)  # nothing left over from earlier tests

    def start(name: str = "w", **env: str) -> CeleryWorker:
        worker = CeleryWorker(env=worker_env(**env), log_path=tmp_path / f"{name}.log",
                              name=name)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_beat(broker, django_db_setup, tmp_path):
    started: list[CeleryBeat] = []

    def start(**env: str) -> CeleryBeat:
        beat = CeleryBeat(env=worker_env(**env), log_path=tmp_path / "beat.log")
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


@pytest.fixture
def embedded_redis(broker) -> EmbeddedRedis:
    """The test run's own Redis, for tests that stop and restart it."""
    if _redis is None:
        pytest.skip("REDIS_URL points at a Redis these tests did not start")
    return _redis


@pytest.fixture
def user(db):
    return make_user("alice")


@pytest.fixture
def other_user(db):
    return make_user("bob")


@pytest.fixture
def admin_user(db):
    return make_user("root", superuser=True)


@pytest.fixture
def api(user) -> APIClient:
    return token_client(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return token_client(other_user)


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    return token_client(admin_user)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can see whether it failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
