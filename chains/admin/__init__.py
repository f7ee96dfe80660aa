"""The admin: chains built with their steps and schedules, runs read step by step; the
admin's own views (views.py) and forms (forms.py) beside it."""

import json
import re
from functools import partial
from typing import cast
from zoneinfo import ZoneInfo, available_timezones

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.forms import TextInput
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from chains import selectors, services, states
from chains.admin import audit as _audit  # noqa: F401 -- registers the audit trail's admin
from chains.admin import bulk as admin_bulk
from chains.admin import notifications as _notifications  # noqa: F401 -- rules, deliveries
from chains.admin import views as admin_views
from chains.admin.compare import compare_selected_runs, run_compare
from chains.admin.forms import (
    JSON_FIELD_OVERRIDES,
    ChainForm,
    LockAwareAdminLoginForm,
    ScheduleInlineFormSet,
    StepInlineForm,
    StepInlineFormSet,
)
from chains.admin.pictures import specs_picture
from chains.admin.versions import version_urls
from chains.errors import ChainError
from chains.models import (
    ApiToken,
    Chain,
    ChainSchedule,
    ChangeSource,
    Run,
    RunTrigger,
    Step,
    StepRun,
)
from chains.permissions import can_start_runs
from chains.presets import PRESETS
from chains.schedules import next_fire_times, schedule_errors, zone
from chains.steps import STEP_TYPES


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP matching rows (a LIMIT inside the COUNT), so a page of a large
    run table never counts the whole table; past the cap the last pages are not offered."""

    COUNT_CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows = cast(QuerySet, self.object_list)  # the admin pages querysets
        # values("pk"): without the annotations the page shows (the runs' version numbers).
        return rows.order_by().values("pk")[: self.COUNT_CAP].count()


class RunStatusFilter(admin.SimpleListFilter):
    """What a run can be (SKIPPED is a step's status only), WAITING included; the parameter
    is the admin's own (`status__exact`), so links to a filtered list keep working."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(status.value, status.label) for status in states.RUN_STATUSES]

    def queryset(self, request, queryset: QuerySet[Run]) -> QuerySet[Run]:
        return queryset.filter(status=self.value()) if self.value() else queryset


class TaskTypeFilter(admin.SimpleListFilter):
    """The seed task types, listed from the presets rather than read from the runs."""

    title = "task type"
    parameter_name = "task_type"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(key, key) for key in PRESETS]

    def queryset(self, request, queryset: QuerySet[Run]) -> QuerySet[Run]:
        return queryset.filter(task_type=self.value()) if self.value() else queryset


def site_view(admin_site, function, **kwargs):
    """An admin_views function as a view behind the admin's login and permission checks."""
    return admin_site.admin_view(
        lambda request, **kw: function(request, admin_site, **kw, **kwargs))


def start_chains(chains: QuerySet[Chain], *, user) -> tuple[list[Run], list[str]]:
    """Start one run per chain; returns the runs started and the errors of those that were not."""
    started, errors = [], []
    for chain in chains:
        try:
            started.append(services.run_start(chain=chain, trigger=RunTrigger.ADMIN, user=user))
        except ChainError as exc:
            reasons = "; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in exc.errors.items())
            errors.append(f"{chain.name}: {reasons}")
    return started, errors


# A run id or its first characters (at least four), as the list shows or Flower prints them.
ID_PREFIX = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]{3,35}")


TIMEZONES = sorted(available_timezones())
# How much of a run's inputs its page shows.
INPUTS_SHOWN = 2000


def short_id(run: Run) -> str:
    return str(run.pk)[:8]


def status_badge(status: str) -> str:
    return format_html('<span class="tc-status tc-status-{}">{}</span>', status.lower(), status)


class StepInline(admin.TabularInline):
    """Steps in order; drag a row to move it (chain_builder.js renumbers the positions)."""

    model = Step
    form = StepInlineForm
    formset = StepInlineFormSet
    extra = 0
    ordering = ["position"]
    fields = ["position", "stage", "name", "step_type", "params", "max_retries", "time_limit",
              "queue", "map", "when", "retry_backoff", "retry_backoff_max"]
    classes = ["tc-steps"]
    formfield_overrides = JSON_FIELD_OVERRIDES


class ChainScheduleInline(admin.StackedInline):
    """Schedules on the chain page; each keeps a beat PeriodicTask in step (see signals)."""

    model = ChainSchedule
    formset = ScheduleInlineFormSet
    extra = 0
    fields = [("name", "enabled"), ("kind", "timezone"), "every_seconds",
              ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), "run_at",
              "inputs", ("overlap", "skipped"), ("owner", "disabled_reason"), "next_fire_times",
              "last_runs"]
    readonly_fields = ["next_fire_times", "last_runs", "owner", "disabled_reason", "skipped"]
    formfield_overrides = JSON_FIELD_OVERRIDES
    classes = ["tc-schedules"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "timezone":  # type or pick an IANA name (the page's datalist)
            kwargs["widget"] = TextInput(attrs={"list": "tc-timezones",
                                                      "autocomplete": "off", "size": 30})
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    # A schedule starts runs as its owner: adding or changing one needs the right to start
    # runs as well as the permission on schedules.
    def has_add_permission(self, request, obj=None) -> bool:
        return super().has_add_permission(request, obj) and can_start_runs(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and can_start_runs(request.user)

    @admin.display(description="owner")
    def owner(self, schedule: ChainSchedule) -> str:
        return str(schedule.created_by or "-")

    @admin.display(description="next fire times")
    def next_fire_times(self, schedule: ChainSchedule) -> str:
        if not schedule.pk or schedule_errors(schedule):
            return "-"
        if not schedule.enabled:
            return "none: the schedule is disabled"
        last = schedule.periodic_task.last_run_at if schedule.periodic_task else None
        try:
            times = next_fire_times(schedule, after=timezone.now(), last_run_at=last)
        except (OverflowError, ValueError, TypeError):  # a row no check ever saw
            return "-"
        return format_html_join(", ", "{}", ((t.strftime("%Y-%m-%d %H:%M:%S %Z"),)
                                             for t in times)) or "none"

    @admin.display(description="last runs")
    def last_runs(self, schedule: ChainSchedule) -> str:
        runs = schedule.runs.order_by("-created_at")[:5] if schedule.pk else []
        try:
            tz = zone(schedule.timezone)
        except (ValueError, KeyError):  # a row no check ever saw: show UTC, labelled
            tz = ZoneInfo("UTC")
        return format_html_join(
            ", ", '<a href="{}">{} {}</a>',
            ((reverse("admin:chains_run_change", args=[r.pk]),
              r.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z"), r.status)
             for r in runs)) or "-"

    @admin.display(description="skipped firings")
    def skipped(self, schedule: ChainSchedule) -> str:
        """Firings the overlap policy skipped (its previous run was still active)."""
        if not schedule.skipped_firings or schedule.last_skipped_at is None:
            return "none"
        return (f"{schedule.skipped_firings}, the last at "
                f"{schedule.last_skipped_at.strftime('%Y-%m-%d %H:%M:%S %Z')}")


@admin.register(Chain)
class ChainAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "step_count", "step_check", "created_by", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    list_select_related = ["created_by"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "max_active_runs"]}),
        ("Inputs", {"fields": ["default_inputs", "inputs_schema"]}),
        ("History", {"fields": ["created_by", "created_at", "updated_at"],
                     "classes": ["collapse"]}),
    ]
    inlines = [StepInline, ChainScheduleInline]
    form = ChainForm
    formfield_overrides = JSON_FIELD_OVERRIDES
    actions = ["run_selected_chains"]
    change_form_template = "admin/chains/chain/change_form.html"

    class Media:
        css = {"all": ["chains/admin.css"]}
        js = ["chains/chain_builder.js"]

    def get_urls(self):
        view = partial(site_view, self.admin_site)
        return [
            path("<int:chain_id>/run/", view(admin_views.chain_run), name="chains_chain_run"),
            path("<int:chain_id>/validate/", view(admin_views.chain_validate),
                 name="chains_chain_validate"),
            path("<int:chain_id>/duplicate/", view(admin_views.chain_duplicate),
                 name="chains_chain_duplicate"),
            path("step-form-schema/<str:key>/", view(admin_views.step_form_schema),
                 name="chains_step_form_schema"),
            path("picture/", view(admin_views.chain_picture_preview),
                 name="chains_chain_picture"),
            path("step-types/", view(admin_views.step_types), name="chains_step_types"),
            *version_urls(view),
            *super().get_urls(),
        ]

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing has happened to a chain not yet saved
            return [fieldset for fieldset in self.fieldsets if fieldset[0] != "History"]
        return self.fieldsets

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, ChainScheduleInline):
            kwargs["user"] = request.user  # schedule_check asks what this user may do
        return kwargs

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        context["timezones"] = TIMEZONES
        if obj is not None:
            context["picture"] = specs_picture(services.chain_step_specs(obj))
            context["can_start"] = can_start_runs(request.user)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(step_total=Count("steps")).prefetch_related(
            Prefetch("steps", queryset=Step.objects.only("chain_id", "step_type")))

    @admin.display(description="step types")
    def step_check(self, chain: Chain) -> str:
        """A chain naming a step type no app declares any more cannot be started."""
        unknown = sorted({s.step_type for s in chain.steps.all()} - set(STEP_TYPES))
        if not unknown:
            return format_html('<span class="tc-ok">{}</span>', "all known")
        return format_html('<span class="tc-error">unknown: {}</span>', ", ".join(unknown))

    @admin.display(description="steps", ordering="step_total")
    def step_count(self, chain: Chain) -> int:
        return chain.step_total  # type: ignore[attr-defined]  # annotated by get_queryset

    # The chain, its steps and its schedules are written by the services, as the API writes
    # them: the forms and formsets only check and carry the input.
    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user

    def save_related(self, request, form, formsets, change) -> None:
        by_model = {formset.model: formset for formset in formsets}
        data = form.cleaned_data
        chain = services.chain_save(
            chain=form.instance, name=data["name"], description=data.get("description", ""),
            enabled=data.get("enabled", False), default_inputs=data.get("default_inputs"),
            inputs_schema=data.get("inputs_schema", form.instance.inputs_schema),
            max_active_runs=data.get("max_active_runs", form.instance.max_active_runs),
            steps=by_model[Step].specs, user=request.user, source=ChangeSource.ADMIN)
        schedules = by_model.get(ChainSchedule)
        for schedule_form in schedules.forms if schedules else []:
            instance = schedule_form.instance
            if schedule_form.cleaned_data.get("DELETE"):
                if instance.pk:
                    services.schedule_delete(schedule=instance)
            elif schedule_form.has_changed():
                services.schedule_save(
                    schedule=ChainSchedule.objects.filter(pk=instance.pk).first(), chain=chain,
                    user=request.user, fields={
                        name: value for name, value in schedule_form.cleaned_data.items()
                        if name in services.SCHEDULE_FIELDS})

    def construct_change_message(self, request, form, formsets, add=False):
        return super().construct_change_message(request, form, [], add)

    def delete_model(self, request, obj: Chain) -> None:
        services.chain_delete(chain=obj)

    def delete_queryset(self, request, queryset) -> None:
        for chain in queryset:
            services.chain_delete(chain=chain)

    @admin.action(description="Run selected chains", permissions=["run"])
    def run_selected_chains(self, request: HttpRequest, queryset: QuerySet[Chain]) -> None:
        started, errors = start_chains(queryset, user=request.user)
        if started:
            links = format_html_join(", ", '<a href="{}">{} ({})</a>', (
                (reverse("admin:chains_run_change", args=[run.pk]), short_id(run),
                 run.chain.name if run.chain else run.task_type) for run in started))
            self.message_user(request, format_html(
                "Started {} run{}: {}", len(started), "" if len(started) == 1 else "s", links),
                messages.SUCCESS)
        for error in errors:
            self.message_user(request, f"Not started: {error}", messages.ERROR)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return can_start_runs(request.user)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    # Fits a 1400 px window beside the filters: the error's first line sits under the chain's
    # name, and the trigger beside who started the run.
    list_display = ["run_id", "what", "status_display", "progress", "started_by", "created",
                    "duration"]
    list_display_links = ["run_id"]
    # No date_hierarchy and no AllValues filter: both read every run of the table (a
    # DISTINCT over a function of created_at, a DISTINCT task_type) on each page view.
    list_filter = [RunStatusFilter, "trigger", TaskTypeFilter, "chain",
                   ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id"]  # the search box; get_search_results says what it finds
    search_help_text = ("A run id or its first characters, a chain name, or a step's task id "
                        "(the id Flower and celery inspect show).")
    list_select_related = ["chain", "created_by"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    # Status, progress, result, error, steps and times are in the live panel above the form.
    readonly_fields = ["id", "chain", "task_type", "description", "trigger", "inputs_shown",
                       "created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["id", "chain", "task_type", "description", "trigger", "created_by",
                           "created_at"]}),
        ("Inputs", {"fields": ["inputs_shown"]}),
    ]
    actions = [admin_bulk.cancel_selected_runs, admin_bulk.retry_selected_runs,
               admin_bulk.delete_selected_runs, compare_selected_runs]
    change_form_template = "admin/chains/run/change_form.html"

    class Media:
        css = {"all": ["chains/admin.css", "chains/timeline.css", "chains/compare.css"]}
        js = ["chains/run_live.js"]

    def get_urls(self):
        view = partial(site_view, self.admin_site)
        return [
            path("dashboard/", view(admin_views.dashboard), name="chains_dashboard"),
            path("cluster/", view(admin_views.cluster_panel), name="chains_cluster_panel"),
            path("compare/", view(run_compare), name="chains_run_compare"),
            path("bulk/", view(admin_bulk.bulk_confirm), name="chains_run_bulk"),
            path("bulk/<uuid:job_id>/", view(admin_bulk.bulk_job), name="chains_run_bulk_job"),
            path("<uuid:run_id>/panel/", view(admin_views.run_panel), name="chains_run_panel"),
            *[path(f"<uuid:run_id>/{action}/", view(admin_views.run_action, action=action),
                   name=f"chains_run_{action}") for action in ("cancel", "retry", "again")],
            *[path(f"<uuid:run_id>/{decision}/", view(admin_views.run_decide,
                                                      approve=decision == "approve"),
                   name=f"chains_run_{decision}") for decision in ("approve", "reject")],
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        if obj is not None:
            context.update(admin_views.run_panel_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return selectors.with_version_numbers(selectors.runs_visible_to(request.user),
                                              current=False)

    @admin.display(description="inputs")
    def inputs_shown(self, run: Run) -> str:
        """The run's inputs as JSON, cut after INPUTS_SHOWN characters (a map over 10,000
        items starts with a long list; the API gives it whole)."""
        text = json.dumps(run.inputs)
        if len(text) <= INPUTS_SHOWN:
            return text
        size = f"{len(run.inputs):,} items, " if isinstance(run.inputs, list) else ""
        return format_html('{}… <small>({}{} characters; all of them: <a href="{}">the API</a>)'
                           "</small>", text[:INPUTS_SHOWN], size, f"{len(text):,}",
                           reverse("run-detail", args=[run.pk]))

    def action_checkbox(self, run: Run) -> SafeString:
        """The selection box Django's CheckboxInput renders, as one format_html: the widget's
        template, rendered for each of a hundred rows, was a fifth of the page's time."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="{}">', helpers.ACTION_CHECKBOX_NAME, str(run.pk),
            format_html(gettext("Select this object for an action - {}"), str(run)))

    @admin.display(description="status", ordering="status")
    def status_display(self, run: Run) -> str:
        return status_badge(run.status)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(chain__name__icontains=term) | Q(task_type=term)
        if ID_PREFIX.fullmatch(term):
            prefix = term.lower()
            found |= Q(id__startswith=prefix) | Q(Exists(
                StepRun.objects.filter(run=OuterRef("pk"), task_id__startswith=prefix)))
        return queryset.filter(found), False

    @admin.display(description="run", ordering="id")
    def run_id(self, run: Run) -> str:
        return format_html('<code class="tc-run-id" title="{}">{}</code>', run.pk, short_id(run))

    @admin.display(description="chain · error", ordering="chain__name")
    def what(self, run: Run) -> str:
        name = run.chain.name if run.chain else run.task_type
        number = getattr(run, "version_number", None)
        version = format_html(' <small class="tc-version-tag" title="chain version {}">v{}'
                              "</small>", number, number) if number else ""
        return format_html("{}{}{}", name, version, self.error_line(run))

    @admin.display(description="trigger · by", ordering="trigger")
    def started_by(self, run: Run) -> str:
        return f"{run.get_trigger_display()} · {run.created_by or '-'}"

    @admin.display(description="created", ordering="created_at")
    def created(self, run: Run) -> str:
        local = timezone.localtime(run.created_at)
        return format_html('<span title="{}">{}</span>', local.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           local.strftime("%m-%d %H:%M"))

    @admin.display(description="progress")
    def progress(self, run: Run) -> str:
        percent = round(100 * run.steps_done / run.steps_total) if run.steps_total else 0
        return format_html(
            '<span class="tc-progress tc-progress-small" title="{}/{} steps">'
            '<span style="width: {}%"></span></span> {}/{}', run.steps_done, run.steps_total,
            percent, run.steps_done, run.steps_total)

    def error_line(self, run: Run) -> str:
        """The first line of the run's error, under its name (the whole error on hover)."""
        first = run.error.strip().splitlines()[0] if run.error.strip() else ""
        if not first:
            return ""
        return format_html('<br><small class="tc-error" title="{}">{}</small>', run.error,
                           first if len(first) <= 80 else first[:79] + "…")

    @admin.display(description="duration")
    def duration(self, run: Run) -> str:
        if run.started_at and run.finished_at:
            return f"{(run.finished_at - run.started_at).total_seconds():.2f}s"
        return "-"

    def delete_model(self, request, obj: Run) -> None:
        services.run_delete(run=obj)

    def delete_queryset(self, request, queryset) -> None:
        for run in queryset:
            services.run_delete(run=run)

    def get_actions(self, request):
        """Delete goes through services.runs_bulk (delete_selected_runs), not Django's own."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def changelist_view(self, request, extra_context=None):
        """The link to act on all runs matching the list's filter (admin.bulk)."""
        extra_context = {**(extra_context or {}), "count_cap": CappedCountPaginator.COUNT_CAP,
                         "bulk_url": admin_bulk.bulk_link(request.GET)}
        return super().changelist_view(request, extra_context)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chains.change_run")


class SuperuserOnlyPeriodicTaskAdmin(PeriodicTaskAdmin):
    """Beat's own page names any task in free text: only superusers may see or use it. Chain
    schedules are edited on their chain's page instead."""

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, SuperuserOnlyPeriodicTaskAdmin)


class TokenRevokeAdmin(TokenAdmin):
    """API tokens are secrets: only superusers see this list, and only a prefix of each key,
    to revoke one. Each user sees and regenerates their own key on the "API token" page."""

    list_display = ["user", "key_prefix", "created"]
    list_select_related = ["user"]
    fields = ["user", "key_prefix", "created"]
    readonly_fields = ["user", "key_prefix", "created"]

    @admin.display(description="key")
    def key_prefix(self, token: ApiToken) -> str:
        return f"{token.key[:4]}…"

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    has_delete_permission = has_view_permission

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


admin.site.unregister(TokenProxy)
admin.site.register(ApiToken, TokenRevokeAdmin)

admin.site.login_form = LockAwareAdminLoginForm
