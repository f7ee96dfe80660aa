"""A chain's versions in the admin: the list (number, author, source, time, the current one
marked) with a readable diff between any two, and "Restore this version" (a confirmation, then
services.version_restore, which writes a new version)."""
import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from chains import selectors, services
from chains.errors import ChainError
from chains.models import Chain, ChainVersion, ChangeSource
from chains.permissions import can_edit_chain, can_read_chain_inputs, signed_in

# Versions on one page of the list.
VERSIONS_PER_PAGE = 50
# How much of one value a diff row shows (the whole definition is a click away).
VALUE_SHOWN = 2000


def version_urls(view) -> list:
    """The chain admin's version pages; `view` wraps an admin view function as the chain
    admin's other pages are wrapped (login, permission checks)."""
    return [
        path("<int:chain_id>/versions/", view(chain_versions), name="chains_chain_versions"),
        path("<int:chain_id>/versions/<int:number>/restore/", view(chain_version_restore),
             name="chains_chain_version_restore"),
    ]


def versions_url(chain_id: int, a: int | None = None, b: int | None = None) -> str:
    """The versions page of a chain, comparing version `a` with version `b` when given."""
    url = reverse("admin:chains_chain_versions", args=[chain_id])
    query = {key: value for key, value in (("a", a), ("b", b)) if value is not None}
    return f"{url}?{urlencode(query)}" if query else url


def _may_view(request: HttpRequest) -> bool:
    return (request.user.has_perm("chains.view_chain")
            or request.user.has_perm("chains.change_chain"))


def _number(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if 0 < number < 2**31 else None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value or "(empty)"
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN] + "…"


def _step_line(step: dict) -> str:
    """A whole step of a definition in one line: type, name, stage, params and the settings
    that differ from a new step's."""
    parts = [str(step.get("step_type", "?"))]
    if step.get("name"):
        parts.append(repr(step["name"]))
    parts.append(f"stage {step.get('stage', 0)}")
    parts.append(f"params {_shown(step.get('params', {}))}")
    for key in ("map", "when", "max_retries", "time_limit", "queue", "retry_backoff"):
        if step.get(key) not in (None, "", False, 0):
            parts.append(f"{key} {_shown(step[key])}")
    return " · ".join(parts)


def diff_rows(old: dict, new: dict, *, hide_inputs: bool = False) -> list[dict]:
    """services.version_diff as the page shows it: per row where, what happened and the old
    and new values as text (a step added or removed in one line; a dict that changed as the
    keys that changed)."""
    rows = []
    for entry in services.version_diff(old, new):
        row = {"where": entry["where"], "change": entry["change"], "old": "", "new": "",
               "keys": []}
        if hide_inputs and entry["where"] == "default_inputs":
            row["old"] = row["new"] = "(hidden: the author's)"
        elif entry["change"] == "added":
            row["new"] = _step_line(entry["new"])
        elif entry["change"] == "removed":
            row["old"] = _step_line(entry["old"])
        elif isinstance(entry["old"], dict) and isinstance(entry["new"], dict):
            row["keys"] = _changed_keys(entry["old"], entry["new"])
        else:
            row["old"], row["new"] = _shown(entry["old"]), _shown(entry["new"])
        rows.append(row)
    return rows


def _changed_keys(before: dict, after: dict) -> list[dict]:
    """The keys of two dicts (a step's params, the default inputs) whose values differ."""
    rows = []
    for key in sorted(set(before) | set(after)):
        if key in before and key in after and before[key] == after[key]:
            continue
        rows.append({"key": key, "old": _shown(before[key]) if key in before else "(none)",
                     "new": _shown(after[key]) if key in after else "(none)"})
    return rows


def chain_versions(request: HttpRequest, admin_site, chain_id: int) -> HttpResponse:
    """The chain's versions, newest first, and the diff between version `a` and version `b`
    (default: the one before the current one and the current one)."""
    if not _may_view(request):
        raise PermissionDenied
    chain = get_object_or_404(Chain, pk=chain_id)
    versions = selectors.chain_versions(chain)
    current = versions.first()
    problems = []
    wanted = {}
    for key in ("a", "b"):
        raw = request.GET.get(key)
        if raw is None or raw == "":
            continue
        number = _number(raw)
        if number is None:
            problems.append(f"{key}: not a version number: {raw!r}")
        elif not versions.filter(number=number).exists():
            problems.append(f"{key}: {chain.name} has no version {number}")
        else:
            wanted[key] = number
    by_number: dict[str, ChainVersion | None] = {"a": None, "b": None}
    if "b" in wanted:
        by_number["b"] = versions.get(number=wanted["b"])
    else:
        by_number["b"] = current
    if "a" in wanted:
        by_number["a"] = versions.get(number=wanted["a"])
    elif by_number["b"] is not None:
        by_number["a"] = versions.filter(number__lt=by_number["b"].number).first()
    old, new = by_number["a"], by_number["b"]
    hide_inputs = not can_read_chain_inputs(request.user, chain)
    page = Paginator(versions, VERSIONS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        **admin_site.each_context(request), "title": f"Versions of {chain.name}",
        "opts": Chain._meta, "chain": chain, "page": page, "current": current,
        "old": old, "new": new, "problems": problems,
        "rows": diff_rows(old.definition, new.definition, hide_inputs=hide_inputs)
        if old is not None and new is not None else [],
        "definition": json.dumps(_readable(new.definition, hide_inputs), indent=2,
                                 ensure_ascii=False) if new is not None else "",
        "can_restore": can_edit_chain(request.user, chain),
        "audit_url": audit_url("chain", chain.pk),
    }
    return render(request, "admin/chains/chain/versions.html", context)


def _readable(definition: dict, hide_inputs: bool) -> dict:
    return {**definition, "default_inputs": "(hidden: the author's)"} if hide_inputs else (
        definition)


@require_http_methods(["GET", "POST"])
def chain_version_restore(request: HttpRequest, admin_site, chain_id: int,
                          number: int) -> HttpResponse:
    """GET: what restoring version `number` would change, and a button to confirm. POST:
    restore it (a new version with its definition) and go back to the versions page, showing
    what the restore changed."""
    chain = get_object_or_404(Chain, pk=chain_id)
    if not can_edit_chain(request.user, chain):
        raise PermissionDenied
    version = get_object_or_404(ChainVersion, chain=chain, number=number)
    current = selectors.chain_versions(chain).first()
    if request.method == "POST":
        try:
            services.version_restore(version=version, user=signed_in(request.user),
                                     source=ChangeSource.RESTORE)
        except ChainError as exc:
            reasons = "; ".join(f"{field}: {', '.join(found)}"
                                for field, found in exc.errors.items())
            messages.error(request, f"Version {number} was not restored: {reasons}.")
            return redirect(versions_url(chain.pk))
        latest = selectors.chain_versions(chain).first()
        if latest is None or current is None or latest.number == current.number:
            messages.info(request, f"Version {number} is the same as the current version"
                                   f"{f' ({current.number})' if current else ''}: nothing "
                                   "changed, no version was written.")
            return redirect(versions_url(chain.pk))
        messages.success(request, f"Restored version {number} as version {latest.number}: "
                                  f"{chain.name} has version {number}'s definition again. "
                                  f"Below, what changed from version {current.number}.")
        return redirect(versions_url(chain.pk, current.number, latest.number))
    hide_inputs = not can_read_chain_inputs(request.user, chain)
    context = {
        **admin_site.each_context(request), "title": f"Restore version {number} of {chain.name}?",
        "opts": Chain._meta, "chain": chain, "version": version, "current": current,
        "rows": diff_rows(current.definition, version.definition, hide_inputs=hide_inputs)
        if current is not None else [],
    }
    return render(request, "admin/chains/chain/version_restore.html", context)


def audit_url(object_type: str, object_id) -> str:
    """The audit trail in the admin, filtered to one object."""
    return reverse("admin:auditlog_logentry_changelist") + "?" + urlencode(
        {"object_type": object_type, "object_pk": str(object_id)})

