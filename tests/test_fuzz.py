"""Schema-driven fuzzing: every operation in /api/schema/, with generated inputs and a valid
token, answers without a server error."""
import json

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from tests.factories import make_user


def _openapi() -> dict:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


pytestmark = pytest.mark.usefixtures("broker")  # /api/workers/ and /api/queues/ ask it
schema = schemathesis.openapi.from_dict(_openapi())
schema.app = get_wsgi_application()


@pytest.fixture
def token(db) -> str:
    """A token, and the test's database connection kept open across WSGI requests (as
    Django's test client does), so every request sees the test's transaction."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield Token.objects.create(user=make_user("fuzzer")).key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.fuzz
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, token, data_dir):
    response = case.call(headers={"Authorization": f"Token {token}"})
    assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                        response.text[:500])


# --- What generated bodies do not reach: suffixes, huge offsets, deep nesting -----------------

SAMPLES = {"id": "1", "key": "math.add", "task_id": "00000000-0000-0000-0000-000000000001"}
OPERATIONS = [(path, method) for path, item in _openapi()["paths"].items()
              for method in item if method in ("get", "post", "put", "patch", "delete")]
WITH_BODY = sorted((path, method) for path, item in _openapi()["paths"].items()
                   for method, operation in item.items() if "requestBody" in operation)


def _concrete(path: str) -> str:
    import re

    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m.group(1), "1"), path)


@pytest.fixture
def fuzz_api(db, data_dir):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(make_user("fuzzer"))
    return client


@pytest.mark.fuzz
@pytest.mark.parametrize("path", sorted({p for p, m in OPERATIONS if m == "get"}))
def test_every_get_with_a_format_suffix_answers_json_without_a_5xx(fuzz_api, path):
    url = _concrete(path)
    suffixed = url.rstrip("/") + ".json"
    response = fuzz_api.get(suffixed)
    assert response.status_code < 500, (suffixed, response.content[:300])
    if response.status_code != 404:  # routes without suffix patterns are simply not found
        assert response["Content-Type"].startswith("application/json"), suffixed


@pytest.mark.fuzz
@pytest.mark.parametrize("path", sorted({p for p, m in OPERATIONS if m == "get"}))
def test_every_get_with_huge_paging_numbers_is_not_a_5xx(fuzz_api, path):
    for value in ("9223372036854775807", "18446744073709551616", "-1"):
        response = fuzz_api.get(_concrete(path), {"offset": value, "limit": value})
        assert response.status_code < 500, (path, value, response.content[:300])


@pytest.mark.fuzz
@pytest.mark.parametrize(("path", "method"), WITH_BODY)
def test_every_body_nested_100000_deep_is_a_4xx_with_json(fuzz_api, path, method):
    body = "[" * 100_000 + "]" * 100_000
    response = getattr(fuzz_api, method)(_concrete(path), body,
                                         content_type="application/json")
    assert 400 <= response.status_code < 500, (method, path, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
