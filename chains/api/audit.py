"""The audit trail in the API, for staff: who did what, when and from where, newest first."""
from auditlog.models import LogEntry
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from chains import audit, selectors
from chains.api.base import ChainsAPI
from chains.api.pagination import RunPagination
from chains.api.throttles import Authenticated


class IsStaff(permissions.BasePermission):
    message = "the audit trail is for staff"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_staff)


class AuditPagination(RunPagination):
    """Counts at most COUNT_CAP entries past the offset (every run started is an entry), as
    /api/runs/ counts runs: `count` is exact below that and a lower bound above it."""


class AuditFilterSerializer(serializers.Serializer):
    user = serializers.CharField(required=False, max_length=150, help_text=(
        "Who acted: a user id or a user name."))
    event = serializers.ChoiceField(choices=list(audit.EVENTS), required=False)
    object_type = serializers.ChoiceField(choices=list(audit.OBJECT_TYPES), required=False)
    object_id = serializers.CharField(required=False, max_length=255, help_text=(
        "The object's id (a run's UUID, a chain's or a schedule's number, a token's prefix)."))
    since = serializers.DateTimeField(required=False, help_text="At or after this time.")
    until = serializers.DateTimeField(required=False, help_text="Before this time.")

    def validate_user(self, value: str) -> int | str:
        value = value.strip()
        return int(value) if value.isdigit() and len(value) < 19 else value

    def validate(self, attrs: dict) -> dict:
        if "since" in attrs and "until" in attrs and attrs["until"] <= attrs["since"]:
            raise serializers.ValidationError({"until": ["must be later than since"]})
        return attrs


class AuditEntrySerializer(serializers.Serializer):
    time = serializers.DateTimeField(source="timestamp")
    user = serializers.SerializerMethodField()
    event = serializers.SerializerMethodField()
    # `source` and `data` name attributes of DRF's own classes too: the serializer's
    # metaclass takes declared fields off the class, so these do not replace them.
    source = serializers.SerializerMethodField()  # type: ignore[assignment]
    remote_addr = serializers.IPAddressField(allow_null=True, help_text=(
        "The client's address (admin and API); null from commands, beat and workers."))
    object_type = serializers.SerializerMethodField()
    object_id = serializers.SerializerMethodField()
    object_repr = serializers.CharField(help_text="The object's name when the entry was "
                                        "written.")
    changes = serializers.JSONField(help_text="{field: [old, new]} where the event changed "
                                    "fields.")
    data = serializers.SerializerMethodField()  # type: ignore[assignment]

    def get_user(self, entry: LogEntry) -> str | None:
        """The user name of who acted; null for the system (a beat firing without an owner,
        the reconciler, a command)."""
        return entry.actor.get_username() if entry.actor else None

    def get_event(self, entry: LogEntry) -> str:
        """One of the events: chain created, run started, token created, ..."""
        return audit.event_of(entry)

    def get_source(self, entry: LogEntry) -> str:
        """admin, api, command, beat, worker or system."""
        return audit.source_of(entry)

    def get_object_type(self, entry: LogEntry) -> str:
        """chain, run, chainschedule or apitoken."""
        return audit.object_type(entry)

    def get_object_id(self, entry: LogEntry) -> str:
        return audit.object_id(entry)

    def get_data(self, entry: LogEntry) -> dict:
        """What the entry keeps besides: a run's trigger, the chain version it wrote or ran,
        an approval's comment, why a schedule was disabled..."""
        return audit.data_of(entry)


class AuditView(ChainsAPI, generics.ListAPIView):
    """The audit trail, newest first (staff only): chains and schedules created, changed,
    enabled, disabled and deleted; runs started, cancelled, retried, approved, rejected and
    deleted; API tokens created. Each with who, when, from where (admin, api, command, beat,
    worker) and the client's address."""

    permission_classes = [Authenticated, IsStaff]
    pagination_class = AuditPagination
    serializer_class = AuditEntrySerializer

    def get_queryset(self):
        filters = AuditFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.audit_entries(**filters.validated_data)

    @extend_schema(parameters=[AuditFilterSerializer],
                   responses={200: AuditEntrySerializer(many=True),
                              403: OpenApiResponse(description="not staff")})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)
