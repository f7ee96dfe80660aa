"""Bulk actions in the run list: cancel, retry from the failed step and delete for the
selected runs (the list's actions), and for all runs matching the list's filter through a
confirmation page that shows how many runs of each status match before anything happens.
Everything goes through services.runs_bulk, which checks each run as its single action."""
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse

from chains import selectors, services, states
from chains.api.bulk import BulkFilterSerializer
from chains.errors import ChainError
from chains.models import BulkJobStatus, Chain, Run, RunStatus
from chains.services import bulk

# The run list's filter parameters that name a filter of selectors.run_list (GET /api/runs/).
LIST_PARAMS = {"status__exact": "status", "trigger__exact": "trigger",
               "chain__id__exact": "chain", "task_type": "task_type"}
VERBS = {"cancel": ("Cancel", "Cancelled"), "retry": ("Retry", "Retried"),
         "delete": ("Delete", "Deleted")}
# What each action acts on; runs in other statuses are skipped as "wrong status".
ACTS_ON = {"cancel": states.OPEN, "retry": frozenset({RunStatus.FAILED, RunStatus.CANCELLED}),
           "delete": frozenset(states.RUN_STATUSES)}
WHAT = {"cancel": "cancels the runs that have not finished (queued, pending, running or "
                  "waiting); their running steps are stopped",
        "retry": "runs failed and cancelled runs again from their first unfinished step, "
                 "with their chain's current params",
        "delete": "deletes the runs with their steps, results and files (unfinished ones are "
                  "cancelled first)"}


def counts_text(action: str, counts: dict[str, Any]) -> tuple[str, str]:
    """The message for runs_bulk's counts, and its level ("success" or "warning")."""
    done = counts["done"]
    text = f"{VERBS[action][1]} {done} run{'' if done == 1 else 's'}."
    skipped = counts["skipped"]
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        total = sum(skipped.values())
        text += f" Skipped {total}: {reasons}."
    return text, ("warning" if skipped else "success")


def _report(request: HttpRequest, action: str, counts: dict[str, Any]) -> None:
    text, level = counts_text(action, counts)
    (messages.warning if level == "warning" else messages.success)(request, text)


def _selected(modeladmin, request: HttpRequest, queryset: QuerySet[Run],
              action: bulk.Action) -> None:
    count = bulk.matching_count(queryset, cap=bulk.IN_REQUEST_LIMIT)
    if count > bulk.IN_REQUEST_LIMIT:
        modeladmin.message_user(request, (
            f"More than {bulk.IN_REQUEST_LIMIT:,} runs selected: filter the list and use "
            "\"Act on all runs matching this filter\", which runs as a job."), messages.ERROR)
        return
    _report(request, action, services.runs_bulk(user=request.user, action=action,
                                                runs=queryset))


@admin.action(description="Cancel selected runs", permissions=["cancel"])
def cancel_selected_runs(modeladmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _selected(modeladmin, request, queryset, "cancel")


@admin.action(description="Retry selected runs from the failed step", permissions=["cancel"])
def retry_selected_runs(modeladmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _selected(modeladmin, request, queryset, "retry")


@admin.action(description="Delete selected runs", permissions=["delete"])
def delete_selected_runs(modeladmin, request: HttpRequest,
                         queryset: QuerySet[Run]) -> HttpResponse | None:
    """Asks first (the counts per status of the selected runs), as Django's own delete does."""
    if request.POST.get("post") == "yes":
        _selected(modeladmin, request, queryset, "delete")
        return None
    counts = selectors.run_status_counts(queryset)
    context = {
        **modeladmin.admin_site.each_context(request), "title": "Delete selected runs?",
        "opts": Run._meta, "counts": _count_rows(counts), "matched": sum(counts.values()),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "list_url": reverse("admin:chains_run_changelist"),
    }
    return render(request, "admin/chains/run/bulk_delete_selected.html", context)


def _count_rows(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(status, counts[status]) for status in counts]


def list_filter(params: QueryDict) -> dict[str, str] | None:
    """The run list's filter as a filter of selectors.run_list, or None when the list is
    filtered by something that is not one (a date, a search, an ordering only is fine)."""
    found = {}
    for key in params:
        if key in LIST_PARAMS:
            found[LIST_PARAMS[key]] = params.get(key, "")
        elif key not in ("o", "p", "_changelist_filters"):
            return None
    return found


def bulk_link(params: QueryDict) -> str | None:
    """The confirmation page's address for the run list's current filter; None when there
    is no filter, or one the page cannot act on."""
    found = list_filter(params)
    if not found:
        return None
    return reverse("admin:chains_run_bulk") + "?" + urlencode(found)


def _describe(filters: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in filters.items():
        if key == "chain":
            chain = Chain.objects.filter(id=value).only("name").first()
            value = chain.name if chain else f"#{value} (no such chain)"
        rows.append((key.replace("_", " "), str(value)))
    return rows


def bulk_confirm(request: HttpRequest, admin_site) -> HttpResponse:
    """GET: what matches the filter, per status, and the actions to choose from; POST: act
    (in the request up to IN_REQUEST_LIMIT runs, else as a job with a progress page)."""
    source = request.POST if request.method == "POST" else request.GET
    raw = {key: source[key] for key in source if key not in ("action", "csrfmiddlewaretoken")}
    checked = BulkFilterSerializer(data=raw)
    if not raw or not checked.is_valid():
        problems = "; ".join(f"{key}: {' '.join(map(str, errors))}"
                             for key, errors in getattr(checked, "_errors", {}).items())
        messages.error(request, "Filter the run list first (by status, trigger, chain or task "
                       f"type) to act on all the runs it matches. {problems}".strip())
        return redirect("admin:chains_run_changelist")
    filters = checked.validated_data
    list_url = reverse("admin:chains_run_changelist") + "?" + urlencode(
        {param: filters[key] for param, key in LIST_PARAMS.items() if key in filters})
    runs = selectors.run_list(user=request.user, **filters)
    if request.method == "POST":
        try:
            action = bulk.as_action(request.POST.get("action", ""))
        except ChainError:
            messages.error(request, "Choose what to do with the runs.")
            return redirect(request.path + "?" + urlencode(filters))
        if bulk.matching_count(runs, cap=bulk.IN_REQUEST_LIMIT) > bulk.IN_REQUEST_LIMIT:
            job = services.bulk_job_create(user=request.user, action=action, filter=filters,
                                           source="admin")
            return redirect("admin:chains_run_bulk_job", job_id=job.id)
        try:
            counts = services.runs_bulk(user=request.user, action=action, runs=runs)
        except ChainError as exc:
            messages.error(request, exc.message)
            return redirect(list_url)
        _report(request, action, counts)
        return HttpResponseRedirect(list_url)
    counts = selectors.run_status_counts(runs)
    matched = sum(counts.values())
    user = request.user
    allowed = {"cancel": user.has_perm("chains.change_run"),
               "retry": user.has_perm("chains.change_run"),
               "delete": user.has_perm("chains.delete_run")}
    choices = [(action, VERBS[action][0], WHAT[action],
                sum(n for status, n in counts.items() if status in ACTS_ON[action]))
               for action in bulk.ACTIONS if allowed[action]]
    # Picked at first: the first action that would act on some run (none that would do nothing).
    default = next((action for action, _, _, acts_on in choices if acts_on), None)
    context = {
        **admin_site.each_context(request), "title": f"Act on all {matched:,} matching runs",
        "opts": Run._meta, "filters": filters, "described": _describe(filters),
        "counts": _count_rows(counts), "matched": matched, "choices": choices,
        "default_action": default,
        "list_url": list_url, "as_job": matched > bulk.IN_REQUEST_LIMIT,
        "limit": bulk.IN_REQUEST_LIMIT,
    }
    return render(request, "admin/chains/run/bulk_confirm.html", context)


def bulk_job(request: HttpRequest, admin_site, job_id) -> HttpResponse:
    """A job's progress, reloading itself until it ends; then its counts as a message."""
    job = selectors.bulk_jobs_visible_to(request.user).filter(id=job_id).first()
    if job is None:
        raise Http404("no such bulk job")
    finished = job.status in (BulkJobStatus.COMPLETED, BulkJobStatus.FAILED)
    if finished and request.GET.get("reported") is None:
        if job.status == BulkJobStatus.COMPLETED:
            _report(request, job.action, {"done": job.done, "skipped": job.skipped})
        else:
            messages.error(request, f"The bulk {job.action} stopped: {job.error}")
        return redirect(request.path + "?reported=1")
    progress = job.progress
    context = {
        **admin_site.each_context(request), "opts": Run._meta, "job": job,
        "title": f"Bulk {job.action} of the matching runs",
        "finished": finished, "percent": None if progress is None else round(progress * 100),
        "skipped": sorted(job.skipped.items()), "verb": VERBS[job.action][1],
        "list_url": reverse("admin:chains_run_changelist") + "?" + urlencode(
            {param: job.filter[key] for param, key in LIST_PARAMS.items()
             if key in job.filter}),
    }
    return render(request, "admin/chains/run/bulk_job.html", context)
