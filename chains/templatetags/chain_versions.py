"""Template tags for chain versions: the run page's "version 7 (current: 9)" line and the
chain page's links to its versions and its audit trail."""
from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from chains import selectors, services
from chains.admin.versions import audit_url, versions_url
from chains.models import Chain, Run

register = template.Library()


@register.simple_tag
def run_version_line(run: Run) -> SafeString | str:
    """Which version of its chain the run ran, against the chain's current one, linking to
    the diff between the two; nothing for a run without a version (a seed task, or one
    started before versions were kept)."""
    numbers = selectors.run_version_numbers(run)
    if numbers is None:
        return ""
    number, chain_id, current = numbers
    if chain_id is None:
        return format_html('<div class="tc-run-version" id="tc-run-version">Chain version {} '
                           '(its chain was deleted)</div>', number)
    if current is None or current == number:
        return format_html(
            '<div class="tc-run-version" id="tc-run-version">Chain <a href="{}" '
            'id="tc-run-version-link">version {} (current)</a></div>',
            versions_url(chain_id, b=number), number)
    return format_html(
        '<div class="tc-run-version" id="tc-run-version">Chain <a href="{}" '
        'id="tc-run-version-link" title="what changed from version {} to version {}">'
        'version {} (current: {})</a></div>',
        versions_url(chain_id, number, current), number, current, number, current)


@register.simple_tag
def chain_history_tools(chain: Chain) -> SafeString:
    """The chain page's links to its versions and its audit trail (object-tools items)."""
    current = services.current_version(chain)
    label = f"Versions ({current.number})" if current is not None else "Versions"
    return format_html(
        '<li><a href="{}" class="tc-versions-link" id="tc-versions-link">{}</a></li>'
        '<li><a href="{}" class="tc-audit-link">Audit trail</a></li>',
        versions_url(chain.pk), label, audit_url("chain", chain.pk))
