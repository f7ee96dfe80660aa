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

from tests.conftest import make_user


def _openapi() -> dict:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


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
