"""The audit trail in the admin: django-auditlog's entries as chains.audit writes them, read
only. Nobody adds, changes or deletes an entry here, superusers included; reading needs
auditlog.view_logentry (or a superuser). Replaces auditlog's own registration."""
import json
import uuid
from functools import cached_property
from typing import Any, cast

from auditlog.models import LogEntry
from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from chains import audit
from chains.admin.versions import versions_url
from chains.models import Chain, ChainSchedule, Run

# The admin pages an entry's object links to: its own, or (a schedule) its chain's.
LINKED: dict[type[Model], str] = {
    Chain: "admin:chains_chain_change", Run: "admin:chains_run_change",
    ChainSchedule: "admin:chains_chain_change",
}
NOT_LOOKED_UP = object()


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP entries (every run started is one: the table grows with the
    runs), so a page never counts the whole table."""

    COUNT_CAP = 10_000

    @cached_property
    def count(self) -> int:
        entries = cast(QuerySet, self.object_list)  # the admin pages querysets
        return entries.order_by()[: self.COUNT_CAP].count()


class UserFilter(admin.RelatedFieldListFilter):
    """Who acted (auditlog calls them the actor)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.title = "user"


class EventFilter(admin.SimpleListFilter):
    """The events chains.audit records (additional_data["event"])."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(event, event) for event in audit.EVENTS]

    def queryset(self, request, queryset: QuerySet[LogEntry]) -> QuerySet[LogEntry]:
        value = self.value()
        return queryset.filter(additional_data__event=value) if value else queryset


class ObjectTypeFilter(admin.SimpleListFilter):
    """What an entry is about: chains, runs, schedules or API tokens."""

    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(key, str(model._meta.verbose_name))
                for key, model in audit.OBJECT_TYPES.items()]

    def queryset(self, request, queryset: QuerySet[LogEntry]) -> QuerySet[LogEntry]:
        value = self.value()
        if value in audit.OBJECT_TYPES:
            return queryset.filter(content_type__in=audit.content_types(value))
        return queryset


class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["time", "user", "event", "object_link", "source", "address"]
    list_display_links = ["time"]
    list_filter = [("actor", UserFilter), EventFilter, ObjectTypeFilter]
    date_hierarchy = "timestamp"
    search_fields = ["object_repr", "=object_pk"]
    search_help_text = "An object's name as the list shows it, or its id."
    list_select_related = ["actor", "content_type"]
    ordering = ["-timestamp", "-id"]
    actions = None
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = ["time", "user", "event", "source", "address", "object_type",
                       "object_link", "changes_shown", "data_shown"]
    fields = list(readonly_fields)

    class Media:
        css = {"all": ["chains/admin.css", "chains/versions.css"]}

    # --- Who may do what: read, nothing else ------------------------------------------------

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        user = request.user
        return user.is_active and user.is_staff and (
            user.is_superuser or user.has_perm("auditlog.view_logentry"))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    # --- The list ---------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context=None):
        return super().changelist_view(request, {"title": "Audit trail", **(extra_context or {})})

    def get_changelist_instance(self, request: HttpRequest):
        changelist = super().get_changelist_instance(request)
        _look_up_objects(changelist.result_list)
        return changelist

    @admin.display(description="time", ordering="timestamp")
    def time(self, entry: LogEntry) -> str:
        return timezone.localtime(entry.timestamp).strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="user", ordering="actor__username")
    def user(self, entry: LogEntry) -> str:
        return str(entry.actor) if entry.actor else "-"

    @admin.display(description="event")
    def event(self, entry: LogEntry) -> str:
        return audit.event_of(entry) or entry.get_action_display()

    @admin.display(description="source")
    def source(self, entry: LogEntry) -> str:
        return audit.source_of(entry) or "-"

    @admin.display(description="address", ordering="remote_addr")
    def address(self, entry: LogEntry) -> str:
        return entry.remote_addr or "-"

    @admin.display(description="object type")
    def object_type(self, entry: LogEntry) -> str:
        return audit.object_type(entry)

    @admin.display(description="object")
    def object_link(self, entry: LogEntry) -> str:
        """The object's name as it was, linked to its page while it exists (a schedule's:
        its chain's page)."""
        url = _object_url(entry)
        name = entry.object_repr
        kind = audit.object_type(entry)
        if kind == "chainschedule":
            kind = "schedule"
        elif kind == "apitoken":
            kind = "token"
        if url:
            return format_html('{} <a href="{}" class="tc-audit-object">{}</a>', kind, url, name)
        return format_html('{} {} <small title="no longer exists">(gone)</small>', kind, name) \
            if getattr(entry, "_tc_gone", False) else format_html("{} {}", kind, name)

    @admin.display(description="changes")
    def changes_shown(self, entry: LogEntry) -> str:
        changes = entry.changes if isinstance(entry.changes, dict) else {}
        if not changes:
            return "-"
        return format_html_join(
            "", "<div><strong>{}</strong>: <code>{}</code> → <code>{}</code></div>",
            ((field, _json(values[0] if isinstance(values, list) and values else values),
              _json(values[1] if isinstance(values, list) and len(values) > 1 else None))
             for field, values in changes.items()))

    @admin.display(description="data")
    def data_shown(self, entry: LogEntry) -> str:
        data = audit.data_of(entry)
        if not data:
            return "-"
        shown = format_html_join("", "<div><strong>{}</strong>: <code>{}</code></div>",
                                 ((key, _json(value)) for key, value in data.items()))
        number = data.get("version")
        if (audit.event_of(entry) == "chain changed" and isinstance(number, int)
                and _object_url(entry)):  # the chain still exists: its versions' diff
            return format_html('{}<div><a href="{}" class="tc-audit-diff">what changed in '
                               "version {}</a></div>", shown,
                               versions_url(int(entry.object_pk), b=number), number)
        return shown


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _object_url(entry: LogEntry) -> str | None:
    """The admin page of the entry's object, None once it is gone (looked up for a page of
    entries at once by get_changelist_instance, else now)."""
    if getattr(entry, "_tc_url", NOT_LOOKED_UP) is NOT_LOOKED_UP:
        _look_up_objects([entry])
    return entry._tc_url


def _look_up_objects(entries) -> None:
    """Which entries' objects still exist, one query per type of object: each entry gets
    `_tc_url` (its admin page, or None) and `_tc_gone`."""
    wanted: dict[type[Model], list[LogEntry]] = {}
    for entry in entries:
        entry._tc_url, entry._tc_gone = None, False
        model = entry.content_type.model_class()
        if model in LINKED:
            wanted.setdefault(model, []).append(entry)
    for model, found in wanted.items():
        pks = {entry.object_pk for entry in found}
        exists: dict[str, Any]
        if model is ChainSchedule:
            exists = {str(pk): chain for pk, chain in ChainSchedule.objects.filter(
                pk__in=_valid_ints(pks)).values_list("pk", "chain_id")}
        elif model is Run:
            exists = {str(pk): pk for pk in Run.objects.filter(
                pk__in=_valid_uuids(pks)).values_list("pk", flat=True)}
        else:
            exists = {str(pk): pk for pk in Chain.objects.filter(
                pk__in=_valid_ints(pks)).values_list("pk", flat=True)}
        for entry in found:
            target = exists.get(entry.object_pk)
            if target is None:
                entry._tc_gone = True
            else:
                entry._tc_url = reverse(LINKED[model], args=[target])


def _valid_ints(values) -> list[int]:
    return [int(value) for value in values if value.isdigit() and len(value) < 19]


def _valid_uuids(values) -> list[uuid.UUID]:
    found = []
    for value in values:
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return found


if admin.site.is_registered(LogEntry):  # auditlog's own, more open to deletes
    admin.site.unregister(LogEntry)
admin.site.register(LogEntry, AuditEntryAdmin)
