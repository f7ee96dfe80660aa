"""Two runs side by side in the admin: the runs list's action "Compare selected runs", the
run page's Compare button with its run picker, and the comparison page. The structure is
selectors.run_comparison's, the one GET /api/runs/compare/ answers with."""
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from chains import selectors
from chains.comparison import ADDED, REMOVED
from chains.models import Run
from chains.timeline import seconds_text

# How much of a JSON value (inputs, params, a result) a cell shows; the whole on hover.
SHOWN_CHARS = 300
# The runs the picker offers.
PICKER_RUNS = 20


def compare_url(a, b=None) -> str:
    query = {"a": str(a)} if b is None else {"a": str(a), "b": str(b)}
    return reverse("admin:chains_run_compare") + "?" + urlencode(query)


@admin.action(description="Compare selected runs", permissions=["view"])
def compare_selected_runs(modeladmin, request: HttpRequest, queryset: QuerySet[Run]):
    """Exactly two runs: their comparison, the older one first (as the base)."""
    picked = list(queryset.order_by("created_at", "id").values_list("pk", flat=True)[:3])
    if len(picked) != 2:
        selected = len(picked) if len(picked) < 3 else queryset.count()
        modeladmin.message_user(
            request, f"Select exactly two runs to compare ({selected} selected).",
            messages.WARNING)
        return None
    return HttpResponseRedirect(compare_url(*picked))


def as_text(value: Any) -> str:
    """A value as a cell shows it: a string as it is, anything else as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value or "-"
    return json.dumps(value, ensure_ascii=False)


def _cell(value: Any) -> dict[str, str]:
    text = as_text(value)
    return {"text": text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…",
            "full": text if len(text) > SHOWN_CHARS else ""}


def _step_cells(side: dict | None, differs: list[str]) -> dict | None:
    if side is None:
        return None
    outcome = side["error"] if side["error"] else side["result"]
    return {
        **side, "params_cell": _cell(side["params"]), "outcome_cell": _cell(outcome),
        "duration_text": seconds_text(side["duration"]) if side["duration"] is not None
        else "-",
        "outcome_is_error": bool(side["error"]),
        "outcome_differs": "result" in differs or "error" in differs,
    }


def _summary_text(field: str, value: Any, side: dict) -> Any:
    if field == "chain":
        return side["chain_name"] or (f"task type {side['task_type']}" if side["task_type"]
                                      else "-")
    if field == "version":
        return f"version {value}" if value is not None else "-"
    if field == "duration":
        return seconds_text(value) if value is not None else "-"
    return value


def _step_names(row: dict) -> dict[str, Any]:
    """A step's name and its type and stage, "old → new" where the two runs differ."""
    sides = [side for side in (row["a"], row["b"]) if side is not None]
    names = [side["name"] or side["step_type"] for side in sides]
    details = [f"{side['step_type']} · stage {side['stage']}" for side in sides]
    return {"label": " → ".join(dict.fromkeys(names)),
            "detail": " → ".join(dict.fromkeys(details)),
            "step_differs": len(sides) == 2 and len(set(names) | set(details)) > 2}


def page_rows(comparison: dict) -> dict:
    """The comparison with what the page prints: each value as cut text (the whole on
    hover), a step's result or error as one cell."""
    summary = [{**row, "a_cell": _cell(_summary_text(row["field"], row["a"], comparison["a"])),
                "b_cell": _cell(_summary_text(row["field"], row["b"], comparison["b"]))}
               for row in comparison["summary"]]
    steps = [{**row, "a": _step_cells(row["a"], row["differs"]),
              "b": _step_cells(row["b"], row["differs"]), **_step_names(row),
              "one_sided": row["change"] in (ADDED, REMOVED)} for row in comparison["steps"]]
    changes = [{**change, "text": _change_text(change)}
               for change in comparison["version_changes"] or []]
    return {"summary_rows": summary, "step_rows": steps, "version_change_rows": changes}


def _change_text(change: dict) -> str:
    """One change between two versions' definitions, as the page words it."""
    def step(value: Any) -> str:
        if isinstance(value, dict) and "step_type" in value:
            name = value.get("name") or value["step_type"]
            return f"{name} ({value['step_type']}, stage {value.get('stage', 0)})"
        return _cell(value)["text"]

    if change["change"] == "added":
        return step(change["new"])
    if change["change"] == "removed":
        return step(change["old"])
    return f"{_cell(change['old'])['text']} → {_cell(change['new'])['text']}"


def _run_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.strip())
    except (ValueError, AttributeError):
        return None


def run_compare(request: HttpRequest, admin_site) -> HttpResponse:
    """With `a` alone: the picker (the latest runs of the same chain, or paste an id). With
    `a` and `b` (or `b_id`, a pasted id): the comparison. A `b` that is no run id is the picker
    again, saying so (400); runs the user may not see are 404."""
    a = _run_id(request.GET.get("a", ""))
    if a is None:
        raise Http404("a: not a run id")
    pasted = request.GET.get("b_id", "").strip()
    raw_b = pasted or request.GET.get("b", "")
    b = _run_id(raw_b) if raw_b else None
    error = ("" if not raw_b else "b: not a run id" if b is None
             else "b: the same run as a; pick another run" if b == a else "")
    base = {**admin_site.each_context(request), "opts": Run._meta}
    if b is not None and not error:
        try:
            comparison = selectors.run_comparison(user=request.user, a=a, b=b)
        except Run.DoesNotExist as exc:
            raise Http404(str(exc)) from exc
        return render(request, "admin/chains/run/compare.html", {
            **base, "title": "Compare runs", "comparison": comparison,
            **page_rows(comparison), "swap_url": compare_url(b, a),
            "a_url": reverse("admin:chains_run_change", args=[a]),
            "b_url": reverse("admin:chains_run_change", args=[b]),
        })
    run = selectors.runs_visible_to(request.user).select_related("version").filter(pk=a).first()
    if run is None:
        raise Http404("a: no run that you may see")
    candidates = list(selectors.comparable_runs(run, user=request.user, limit=PICKER_RUNS))
    for other in candidates:
        took = (other.finished_at - other.started_at).total_seconds() if (
            other.started_at and other.finished_at) else None
        other.took = seconds_text(took) if took is not None else "-"  # type: ignore[attr-defined]
    return render(request, "admin/chains/run/compare_pick.html", {
        **base, "title": "Compare with another run", "run": run, "candidates": candidates,
        "pasted": pasted, "error": error,
    }, status=400 if error else 200)
