"""The admin's own pages: run a chain, validate, duplicate, the live run panel, run actions,
and the dashboard. Each calls the same services and selectors as the API."""
import json
from urllib.parse import urlencode

import pygal
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.forms import Media
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django_jsonform.widgets import JSONFormWidget
from pygal.style import Style

from chains import selectors, services, states
from chains.admin.forms import (
    inputs_error_map,
    inputs_form_schema,
    inputs_from_form,
    params_form_schema,
    params_rows,
)
from chains.admin.pictures import run_picture, specs_picture
from chains.admin.timeline import run_page_timeline
from chains.bounds import parse_json
from chains.cluster import cluster_state
from chains.conditions import describe
from chains.errors import ChainError, Conflict
from chains.models import Chain, RunStatus, RunTrigger, Step
from chains.permissions import can_change_run, can_read_chain_inputs, can_start_runs, signed_in
from chains.presets import StepSpec
from chains.queues import allowed_queues
from chains.steps import STEP_TYPES
from chains.steps.flow import APPROVAL

STATUS_COLOURS = {"PENDING": "#8a8f98", "RUNNING": "#2f6fdb", "WAITING": "#b7791f",
                  "COMPLETED": "#2e8540", "FAILED": "#c62828", "CANCELLED": "#6d4c41"}
# The failed items of a map step the run page lists (their count says how many more).
FAILED_ITEMS_SHOWN = 20


def run_url(run) -> str:
    return reverse("admin:chains_run_change", args=[run.pk])


def _errors_text(error: ChainError) -> str:
    return "; ".join(f"{field}: {', '.join(reasons)}" for field, reasons in error.errors.items())


# --- Chains -----------------------------------------------------------------------------------


def chain_run(request: HttpRequest, admin_site, chain_id: int) -> HttpResponse:
    """GET: the inputs form (generated from the chain's inputs schema when it has one, else a
    JSON box), with a warning when no worker consumes a queue the chain needs. POST: start the
    run (services.run_start checks the inputs) and go to its page."""
    chain = get_object_or_404(Chain, pk=chain_id)
    if not can_start_runs(request.user):
        raise PermissionDenied
    generated = inputs_form_schema(chain.inputs_schema)
    defaults = chain.default_inputs if can_read_chain_inputs(request.user, chain) else {}
    inputs_text = json.dumps(defaults, indent=2)
    errors: list[str] = []
    inputs_refused = False
    inputs_error = ""
    error_map: dict[str, list[str]] = {}
    if request.method == "POST":
        inputs_text = request.POST.get("inputs", "").strip()
        try:
            posted = parse_json(inputs_text) if inputs_text else None  # empty: the defaults
        except ValueError as exc:
            inputs_error = str(exc)
        else:
            inputs = (inputs_from_form(posted, wrapped=generated[1]) if generated
                      else posted)
            try:
                run = services.run_start(chain=chain, inputs=inputs, trigger=RunTrigger.ADMIN,
                                         user=signed_in(request.user))
            except ChainError as exc:
                errors = [f"{field}: {reason}" for field, reasons in exc.errors.items()
                          for reason in reasons]
                inputs_refused = all(field.split(".")[0] == "inputs" for field in exc.errors)
                if generated:
                    error_map = inputs_error_map(exc.errors, wrapped=generated[1])
            else:
                messages.success(request, f"Started run {run.id}.")
                return redirect(run_url(run))
    form_html, media = "", Media()
    if generated:
        schema, wrapped = generated
        if request.method == "POST" and not inputs_error:
            data = inputs_text or "{}"
        elif defaults not in (None, {}):
            data = json.dumps({"inputs": defaults} if wrapped else defaults)
        else:
            data = ""  # the form starts from the schema's defaults
        widget = JSONFormWidget(schema=schema)
        if error_map:
            widget.add_error(error_map)
        form_html = widget.render("inputs", data, attrs={"id": "id_inputs"})
        media = widget.media
    queues = sorted({step.queue or STEP_TYPES[step.step_type].default_queue
                     for step in chain.steps.all() if step.step_type in STEP_TYPES} | {"celery"})
    context = {
        **admin_site.each_context(request), "title": f"Run {chain.name}", "chain": chain,
        "opts": Chain._meta, "inputs": inputs_text, "errors": errors,
        "inputs_refused": inputs_refused,
        "inputs_error": inputs_error, "form_html": form_html, "media": media,
        "inputs_schema": json.dumps(chain.inputs_schema, indent=2)
        if chain.inputs_schema is not None else "",
        "cluster_url": reverse("admin:chains_cluster_panel") + "?" + urlencode(
            {"queue": queues}, doseq=True),
    }
    return render(request, "admin/chains/chain/run_form.html", context)


def cluster_panel(request: HttpRequest, admin_site) -> HttpResponse:
    """Workers and queues, asked after the page that shows them has rendered (a broker that
    does not answer slows this fragment, never the page). With `queue`s: whether a live
    worker consumes each (the Run now page)."""
    needed = [queue for queue in request.GET.getlist("queue") if queue in allowed_queues()]
    cluster = cluster_state(timeout=1.0)
    return render(request, "admin/chains/_cluster.html", {
        "cluster": cluster, "queues": needed,
        "missing_queues": cluster.queues_without_workers(needed) if needed else [],
    })


@require_POST
def chain_validate(request: HttpRequest, admin_site, chain_id: int) -> HttpResponse:
    chain = get_object_or_404(Chain, pk=chain_id)
    problems = services.chain_problems(chain)
    if problems:
        for problem in problems:
            messages.error(request, f"Problem: {problem}")
    else:
        messages.success(request, "The chain is valid: every step type is known, every params "
                                  "fits its schema, every stage's input fits, and every "
                                  "sub-chain exists without a cycle.")
    return redirect(reverse("admin:chains_chain_change", args=[chain.pk]))


@require_POST
def chain_duplicate(request: HttpRequest, admin_site, chain_id: int) -> HttpResponse:
    if not request.user.has_perm("chains.add_chain"):
        raise PermissionDenied
    chain = get_object_or_404(Chain, pk=chain_id)
    copy = services.chain_duplicate(chain=chain, user=signed_in(request.user))
    messages.success(request, f"Duplicated as {copy.name!r}.")
    return redirect(reverse("admin:chains_chain_change", args=[copy.pk]))


MAX_PREVIEW_TEXT = 200


def _preview_spec(row) -> StepSpec:
    """One row of the builder as the preview sends it: [stage, label], or an object with
    stage, label, type, map, when and chain (a flow.chain step's chain)."""
    if isinstance(row, list | tuple):
        stage, label = row
        return StepSpec(step_type="", params={}, stage=int(stage), name=str(label)[:100])
    if not isinstance(row, dict):
        raise TypeError("a row is [stage, label] or an object")
    when = row.get("when")
    if when is not None and (not isinstance(when, dict)
                             or len(json.dumps(when)) > MAX_PREVIEW_TEXT):
        when = {"op": "?"}  # drawn as a condition that is not valid yet
    step_type = str(row.get("type") or "")[:64]
    chain = row.get("chain")
    return StepSpec(step_type=step_type, stage=int(row.get("stage") or 0),
                    name=str(row.get("label") or "")[:100], map=bool(row.get("map")),
                    when=when, params={"chain": chain[:200]} if isinstance(chain, str) else {})


def chain_picture_preview(request: HttpRequest, admin_site) -> HttpResponse:
    """The picture of the steps as the builder has them on screen (unsaved): `steps` is a JSON
    list of rows in row order (see _preview_spec)."""
    try:
        rows = parse_json(request.GET.get("steps", "[]"))
        if not isinstance(rows, list):
            raise TypeError("not a list")
        specs = [_preview_spec(row) for row in rows]
    except (ValueError, TypeError, OverflowError):
        return HttpResponseBadRequest(
            "steps: a JSON list of [stage, label] or {stage, label, type, map, when, chain}")
    if len(specs) > settings.CHAINS_MAX_STEPS:
        return HttpResponseBadRequest(f"steps: at most {settings.CHAINS_MAX_STEPS}")
    if any(not 0 <= spec.stage <= 10_000 for spec in specs):
        return HttpResponseBadRequest("steps: a stage is between 0 and 10000")
    return render(request, "admin/chains/_picture.html", {"picture": specs_picture(specs)})


def step_types(request: HttpRequest, admin_site) -> HttpResponse:
    """The step-type catalogue: every registered type by family (built-in and declared by
    apps alike), what it takes and gives, its params, and the chains that use it."""
    used: dict[str, list[tuple[int, str]]] = {}
    for key, chain_id, name in (Step.objects.order_by("chain__name").distinct()
                                .values_list("step_type", "chain_id", "chain__name")):
        used.setdefault(key, []).append((chain_id, name))
    families: dict[str, list[dict]] = {}
    for key, step_type in STEP_TYPES.items():
        families.setdefault(step_type.family, []).append({
            "type": step_type, "params": params_rows(step_type.params_schema()),
            "chains": used.get(key, []), "origin": step_type.run.__module__})
    unknown = sorted(set(used) - set(STEP_TYPES))
    context = {
        **admin_site.each_context(request), "title": "Step types", "opts": Chain._meta,
        "families": families, "unknown": [(key, used[key]) for key in unknown],
    }
    return render(request, "admin/chains/step_types.html", context)


def step_form_schema(request: HttpRequest, admin_site, key: str) -> JsonResponse:
    """The params form schema of a step type, for the chain builder's step-type picker."""

    if key not in STEP_TYPES:
        return JsonResponse({"detail": f"unknown step type {key!r}"}, status=404)
    return JsonResponse(params_form_schema(STEP_TYPES[key]))


# --- Runs -------------------------------------------------------------------------------------


def _map_details(step_run) -> dict:
    """A map step's items as the run page shows them: counts by status and the first failed
    items (never the items themselves)."""
    counts = services.map_counts(step_run)
    failed = selectors.map_failed_items(step_run, limit=FAILED_ITEMS_SHOWN)
    total = step_run.items_total or sum(counts.values())
    done = counts[RunStatus.COMPLETED]
    return {"counts": counts, "total": total, "done": done,
            "percent": int(100 * done / total) if total else 0,
            "failed": failed, "more_failed": max(0, counts[RunStatus.FAILED] - len(failed))}


def run_panel_context(request: HttpRequest, run) -> dict:
    step_runs = selectors.step_runs_with_results(run)
    started = run.started_at or run.created_at
    elapsed = ((run.finished_at or timezone.now()) - started).total_seconds()
    stages = selectors.run_stages(step_runs)
    children = selectors.run_children(run)
    approvals = selectors.run_approvals(run)
    # What the page shows under each step besides its row: its condition, a map step's
    # items, an approval's decisions, a flow.chain step's child runs.
    rows = [(step_run, {
        "condition": describe(step_run.when) if isinstance(step_run.when, dict) else "",
        "map": _map_details(step_run) if step_run.map and step_run.items_total is not None
        else None,
        "children": children.get(step_run.id, []),
        "approvals": [{
            "approval": approval,
            "may_decide": not approval.decision and step_run.status == RunStatus.WAITING
            and services.may_decide(signed_in(request.user), approval),
        } for approval in approvals.get(step_run.id, [])],
    }) for step_run in step_runs]
    waits_for = [f"a decision on step {sr.index + 1}" if sr.step_type == APPROVAL
                 else f"its child run (step {sr.index + 1})"
                 for sr in step_runs if sr.status == RunStatus.WAITING]
    parent = run.parent_step
    return {
        "waits_for": " and ".join(waits_for),
        "run": run, "stages": stages, "step_runs": step_runs, "rows": rows,
        "picture": run_picture(stages, children),
        "timeline": run_page_timeline(run, step_runs, children, now=timezone.now()),
        "parent_step": parent, "parent_run": parent.run if parent else None,
        "elapsed": elapsed, "estimate": selectors.run_duration_estimate(run),
        "percent": int(100 * run.steps_done / run.steps_total) if run.steps_total else 0,
        "can_change": can_change_run(request.user, run),
        "can_start": can_start_runs(request.user),
    }


def run_panel(request: HttpRequest, admin_site, run_id) -> HttpResponse:
    """The live part of the run page, polled by run_live.js until the run is finished."""
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
    html = render_to_string("admin/chains/run/_panel.html", run_panel_context(request, run),
                            request=request)
    response = HttpResponse(html)
    response["X-Run-Finished"] = "1" if run.is_finished else "0"
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def run_action(request: HttpRequest, admin_site, run_id, action: str) -> HttpResponse:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
    allowed = can_start_runs(request.user) if action == "again" else can_change_run(
        request.user, run)
    if not allowed:
        raise PermissionDenied
    try:
        if action == "cancel":
            cancelled = services.run_cancel(run=run)
            messages.success(request, cancelled.error[:1].upper() + cancelled.error[1:] + ".")
        elif action == "retry":
            services.run_retry(run=run)
            messages.success(request, "Retrying from the failed step.")
        else:
            new = services.run_again(run=run, user=signed_in(request.user))
            messages.success(request, f"Started run {new.id}.")
            return redirect(run_url(new))
    except ChainError as exc:
        messages.error(request, _errors_text(exc))
    return redirect(run_url(run))


@require_POST
def run_decide(request: HttpRequest, admin_site, run_id, approve: bool) -> HttpResponse:
    """Approve or reject the approval the run waits for (services.run_decide says who may and
    whether it still waits); what it refuses is shown as a message on the run page."""
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
    comment = request.POST.get("comment", "").strip()
    try:
        decided = services.run_decide(run=run, user=signed_in(request.user), approve=approve,
                                      comment=comment)
    except PermissionDenied as exc:
        messages.error(request, f"Not allowed: {exc or 'you may not decide this approval'}.")
    except Conflict as exc:
        reasons = "; ".join(reason for found in exc.errors.values() for reason in found)
        messages.error(request, f"Not decided: {reasons}.")
    except ChainError as exc:
        messages.error(request, _errors_text(exc))
    else:
        if approve:
            messages.success(request, "Approved: the run goes on." if not decided.is_finished
                             else f"Approved: the run is {decided.status}.")
        else:
            messages.warning(request, f"Rejected: the run is {decided.status}.")
    return redirect(run_url(run))


# --- Dashboard --------------------------------------------------------------------------------


def _runs_per_hour_chart(user) -> str:
    hours = selectors.runs_per_hour(user=user)
    # The admin's own font and colours (its CSS variables reach the inline SVG).
    font = "var(--font-family-primary, sans-serif)"
    style = Style(colors=tuple(STATUS_COLOURS.values()), background="transparent",
                  plot_background="transparent", font_family=font,
                  foreground="var(--body-fg, #333)", foreground_strong="var(--body-fg, #333)",
                  foreground_subtle="var(--hairline-color, #e8e8e8)",
                  title_font_family=font, label_font_family=font, legend_font_family=font,
                  major_label_font_family=font, value_font_family=font)
    chart = pygal.StackedBar(
        style=style, height=280, width=900, show_legend=True, legend_at_bottom=True,
        x_label_rotation=0, show_minor_x_labels=False, js=[], disable_xml_declaration=True,
        title="Runs per hour, last 24 hours",
    )
    chart.x_labels = [hour.strftime("%H:00") for hour, _ in hours]
    chart.x_labels_major = chart.x_labels[::3]
    tallest = max((sum(counts.values()) for _, counts in hours), default=0)
    step = max(1, -(-tallest // 8))
    chart.y_labels = list(range(0, tallest + step + 1, step))  # whole runs, not fractions
    for status in STATUS_COLOURS:
        chart.add(status.title(), [counts.get(status, 0) for _, counts in hours])
    return mark_safe(chart.render(is_unicode=True))  # noqa: S308 (pygal's own SVG)


def dashboard(request: HttpRequest, admin_site) -> HttpResponse:
    counts = selectors.run_statistics(user=request.user)
    context = {
        **admin_site.each_context(request), "title": "Dashboard", "opts": Chain._meta,
        "counts": [(s.label, s.value, counts[s.value.lower()]) for s in states.RUN_STATUSES],
        "total": counts["total"], "retried": counts["retried"],
        "chart": _runs_per_hour_chart(request.user),
        "performance": selectors.chain_performance(user=request.user),
        "failures": selectors.recent_failures(user=request.user),
        "approvals": selectors.approvals_waiting(user=request.user),
        "cluster_url": reverse("admin:chains_cluster_panel"), "as_of": timezone.now(),
    }
    return render(request, "admin/chains/dashboard.html", context)




# --- Your API token ---------------------------------------------------------------------------


def api_token(request: HttpRequest, admin_site) -> HttpResponse:
    """The signed-in user's own API token: shown to them alone; POST makes a new one."""
    if request.method == "POST":
        services.token_regenerate(user=signed_in(request.user))
        messages.success(request, "A new API token was made; the old one no longer works.")
        return redirect(reverse("admin-token"))
    context = {**admin_site.each_context(request), "title": "Your API token",
               "token": selectors.token_of(request.user)}
    return render(request, "admin/chains/token.html", context)
