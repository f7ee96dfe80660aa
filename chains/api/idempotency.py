"""The Idempotency-Key header of run-starting requests, and what makes two requests the
same (chains.services.run_start_once keeps the rule)."""
import hashlib
import json

from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Send the request again with the same key (within 24 h) and get the run it "
    "started, with 200, instead of a second run; another request under the key is a 409.")


def idempotency_key(request: Request) -> str | None:
    return request.headers.get("Idempotency-Key") or None


def request_fingerprint(request: Request) -> str:
    """The request's method, path and body (its JSON, keys sorted), hashed."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()
