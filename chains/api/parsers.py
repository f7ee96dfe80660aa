"""Request bodies: JSON whose nesting is bounded before any serializer walks it."""

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from chains.bounds import json_depth

# A body wraps the values it carries ({"inputs": ...}, {"steps": [{"params": ...}]}): these
# levels are allowed on top of CHAINS_MAX_JSON_DEPTH, so that the field checks, which name
# the field, see the value.
ENVELOPE_DEPTH = 4


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, with a 400 (not a RecursionError and a 500) for a body nested
    deeper than CHAINS_MAX_JSON_DEPTH allows."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(self._too_deep()) from None
        limit = settings.CHAINS_MAX_JSON_DEPTH + ENVELOPE_DEPTH
        if json_depth(data, stop_after=limit) > limit:
            raise ParseError(self._too_deep())
        return data

    @staticmethod
    def _too_deep() -> str:
        limit = settings.CHAINS_MAX_JSON_DEPTH
        return f"JSON parse error - the body is nested too deeply (values: at most {limit} levels)"


