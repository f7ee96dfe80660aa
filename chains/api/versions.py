"""A chain's versions in the API: the list (newest first, paged), one version with its
definition, the diff between two, and restore (which writes a new version)."""
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from chains import selectors, services
from chains.api.base import ChainsAPI
from chains.api.errors import as_api_error
from chains.errors import ChainError
from chains.models import Chain, ChainVersion, ChangeSource
from chains.permissions import can_edit_chain, can_read_chain_inputs, signed_in

# The largest version number a request may name (the column is a 32-bit integer).
MAX_NUMBER = 2**31 - 1
HIDDEN = "(hidden: the chain's default inputs are its author's)"
# The path of one version: /api/chains/{chain_id}/versions/{number}/...
VERSION_PATH = [OpenApiParameter("chain_id", OpenApiTypes.INT, OpenApiParameter.PATH),
                OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH)]


class ChainVersionSerializer(serializers.ModelSerializer):
    author: serializers.StringRelatedField = serializers.StringRelatedField(
        help_text="Who saved it; null when nobody signed in did (a command, an import).")
    current = serializers.SerializerMethodField()

    class Meta:
        model = ChainVersion
        fields = ["number", "author", "source", "created_at", "current"]

    def get_current(self, version: ChainVersion) -> bool:
        """Whether this is the chain's current version (its newest)."""
        return version.number == self.context.get("current")


class ChainVersionDetailSerializer(ChainVersionSerializer):
    definition = serializers.SerializerMethodField()

    class Meta(ChainVersionSerializer.Meta):
        fields = ["chain", *ChainVersionSerializer.Meta.fields, "definition"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_definition(self, version: ChainVersion) -> dict:
        """The whole definition: name, description, default_inputs, inputs_schema, steps (as
        GET /api/chains/{id}/ gives them). default_inputs is hidden from users who may not read
        the chain's inputs."""
        if self.context.get("hide_inputs"):
            return {**version.definition, "default_inputs": HIDDEN}
        return version.definition


class DiffEntrySerializer(serializers.Serializer):
    where = serializers.CharField(help_text='"name", "description", "default_inputs", '
                                  '"inputs_schema", "step 2" (added or removed) or "step 2 '
                                  'params" (one field of a step; steps aligned by position)')
    change = serializers.CharField(help_text='"changed", "added" (a step) or "removed" (a '
                                   'step)')
    old = serializers.JSONField(allow_null=True, help_text="null for an added step")
    new = serializers.JSONField(allow_null=True, help_text="null for a removed step")


class VersionDiffSerializer(serializers.Serializer):
    chain = serializers.IntegerField()
    a = serializers.IntegerField(help_text="The version compared from.")
    b = serializers.IntegerField(help_text="The version compared to.")
    changes = DiffEntrySerializer(many=True, help_text="Empty when both have the same "
                                  "definition.")


def version_number(value, field: str) -> int:
    """A version number from the request: 400 naming `field` unless it is a whole number
    from 1."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 10 or not 0 < int(text) <= MAX_NUMBER:
        raise ValidationError({field: [f"must be a version number (a whole number from 1), "
                                       f"not {str(value)[:40]!r}"]})
    return int(text)


class ChainVersionViewSet(ChainsAPI, viewsets.GenericViewSet):
    """The versions of a chain. Anyone signed in reads them (as they read chains); restoring
    needs the right to change the chain."""

    serializer_class = ChainVersionSerializer
    queryset = ChainVersion.objects.none()  # for the schema; each action reads its chain's

    def _chain(self) -> Chain:
        chain_id = self.kwargs["chain_id"]
        chain = selectors.chains_visible_to(self.request.user).filter(pk=chain_id).first()
        if chain is None:
            raise NotFound({"chain": [f"no chain with id {chain_id}"]})
        return chain

    def _version(self, chain: Chain, value, field: str) -> ChainVersion:
        number = version_number(value, field)
        version = selectors.chain_versions(chain).filter(number=number).first()
        if version is None:
            raise NotFound({field: [f"chain {chain.pk} ({chain.name}) has no version {number}"]})
        return version

    def _context(self, chain: Chain) -> dict:
        current = selectors.chain_versions(chain).values_list("number", flat=True).first()
        return {"current": current, "request": self.request,
                "hide_inputs": not can_read_chain_inputs(self.request.user, chain)}

    @extend_schema(responses=ChainVersionSerializer(many=True),
                   parameters=VERSION_PATH[:1])
    def list(self, request: Request, chain_id: str) -> Response:
        """The chain's versions, newest first (`?limit=&offset=`)."""
        chain = self._chain()
        page = self.paginate_queryset(selectors.chain_versions(chain))
        return self.get_paginated_response(
            ChainVersionSerializer(page, many=True, context=self._context(chain)).data)

    @extend_schema(responses={200: ChainVersionDetailSerializer,
                              400: OpenApiResponse(description="`number` is not a number"),
                              404: OpenApiResponse(description="no such chain or version")},
                   parameters=VERSION_PATH)
    def retrieve(self, request: Request, chain_id: str, number: str) -> Response:
        """One version with its whole definition."""
        chain = self._chain()
        version = self._version(chain, number, "number")
        return Response(ChainVersionDetailSerializer(version, context=self._context(chain)).data)

    @extend_schema(responses={200: VersionDiffSerializer,
                              400: OpenApiResponse(description="`a` or `b` missing or not a "
                                                   "number"),
                              404: OpenApiResponse(description="no such chain, or no version "
                                                   "`a` or `b` (naming which)")},
                   parameters=[*VERSION_PATH[:1],
                               OpenApiParameter("a", OpenApiTypes.INT, required=True,
                                                description="the version compared from"),
                               OpenApiParameter("b", OpenApiTypes.INT, required=True,
                                                description="the version compared to")])
    def diff(self, request: Request, chain_id: str) -> Response:
        """What changed from version `a` to version `b`: per field of the chain, and per step
        (aligned by position) added, removed or each field changed, with the old and new
        values."""
        chain = self._chain()
        missing = {key: ["required: a version number"] for key in ("a", "b")
                   if not request.query_params.get(key)}
        if missing:
            raise ValidationError(missing)
        numbers = {key: version_number(request.query_params[key], key) for key in ("a", "b")}
        old, new = (self._version(chain, numbers[key], key) for key in ("a", "b"))
        changes = services.version_diff(old.definition, new.definition)
        if not can_read_chain_inputs(request.user, chain):
            changes = [{**entry, "old": HIDDEN, "new": HIDDEN}
                       if entry["where"] == "default_inputs" else entry for entry in changes]
        return Response(VersionDiffSerializer({
            "chain": chain.pk, "a": old.number, "b": new.number, "changes": changes}).data)

    @extend_schema(request=None,
                   responses={201: ChainVersionDetailSerializer,
                              200: OpenApiResponse(ChainVersionDetailSerializer,
                                                   description="the version has the current "
                                                   "definition: nothing was written"),
                              400: OpenApiResponse(description="`number` is not a number, or "
                                                   "the version no longer validates (naming "
                                                   "the step)"),
                              403: OpenApiResponse(description="without the right to change "
                                                   "the chain"),
                              404: OpenApiResponse(description="no such chain or version")},
                   parameters=VERSION_PATH)
    def restore(self, request: Request, chain_id: str, number: str) -> Response:
        """Give the chain version `number`'s definition again, as a new version (201 with
        it); no version is changed or removed. 200 with the current version when it already
        has that definition."""
        chain = self._chain()
        version = self._version(chain, number, "number")
        if not can_edit_chain(request.user, chain):
            raise PermissionDenied("you may not change this chain")
        before = selectors.chain_versions(chain).values_list("number", flat=True).first()
        try:
            services.version_restore(version=version, user=signed_in(request.user),
                                     source=ChangeSource.RESTORE)
        except ChainError as exc:
            raise as_api_error(exc) from exc
        latest = selectors.chain_versions(chain).first()
        return Response(ChainVersionDetailSerializer(latest, context=self._context(chain)).data,
                        status=status.HTTP_200_OK if latest is None or latest.number == before
                        else status.HTTP_201_CREATED)


CHAIN = r"^chains/(?P<chain_id>\d{1,18})/versions/"
# The number is read by the view (version_number): a malformed one is a 400 naming it. No
# dot: "1.json" is not a version, and Django's APPEND_SLASH would otherwise redirect to it.
NUMBER = r"(?P<number>[^/.]{1,64})/"

version_urlpatterns = [
    re_path(CHAIN + r"$", ChainVersionViewSet.as_view({"get": "list"}),
            name="chain-version-list"),
    re_path(CHAIN + r"diff/$", ChainVersionViewSet.as_view({"get": "diff"}),
            name="chain-version-diff"),
    re_path(CHAIN + NUMBER + r"$", ChainVersionViewSet.as_view({"get": "retrieve"}),
            name="chain-version-detail"),
    re_path(CHAIN + NUMBER + r"restore/$", ChainVersionViewSet.as_view({"post": "restore"}),
            name="chain-version-restore"),
]
