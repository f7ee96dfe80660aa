"""Notifications: a chain's rules say on which events (a run failed, completed, waits for an
approval, or took longer than the chain's usual p95) whom to tell, by email or by a signed
webhook. Each event makes one Delivery per matching rule, sent by a Celery task on the general
queue with retries and exponential backoff.

Nothing here delays or fails a run: deliveries are made after the run's own transaction
commits (run_ended and run_waiting receivers defer with transaction.on_commit), and every
exception past that point is caught and recorded on the Delivery.

Webhooks never reach private addresses (no SSRF): the URL must be https (http only with
CHAINS_WEBHOOK_ALLOW_HTTP), its host is resolved here and every address must be public unless
the host matches CHAINS_WEBHOOK_ALLOWED_HOSTS, and the connection is opened to an address that
was checked (the host name is only the TLS server name and the Host header), so a DNS answer
that changes between the check and the connection is never used. Redirects are not followed.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from celery import current_app as app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from chains import selectors
from chains.errors import ChainError
from chains.models import Chain, Delivery, NotificationRule, Run, RunStatus, StepRun
from chains.notification_models import DeliveryStatus, NotificationChannel, NotificationEvent
from chains.services.metrics import metrics_delivery_failed

logger = logging.getLogger(__name__)

DELIVER_TASK = "chains.deliver_notification"
DELIVERY_QUEUE = "celery"
SIGNATURE_HEADER = "X-Task-Chain-Signature"
TIMESTAMP_HEADER = "X-Task-Chain-Timestamp"
EVENTS = frozenset(NotificationEvent.values)
# Of a response, what is kept in the delivery's error.
RESPONSE_SNIPPET = 300
# A run is slow only against at least this many earlier completed runs of its chain.
SLOW_MIN_SAMPLE = 5
SLOW_SAMPLE = 50
# Addresses ipaddress does not already call private, reserved or not global.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "255.255.255.255/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    "::/128", "::1/128", "2001:db8::/32"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DeliveryRefused(Exception):
    """A delivery that cannot succeed by trying again (a refused URL, a redirect, a 4xx)."""


class DeliveryFailed(Exception):
    """A delivery that may succeed later (a network error, a 5xx, 408, 429)."""


def _refuse(field: str, reason: str) -> ChainError:
    return ChainError(f"{field}: {reason}", errors={field: [reason]})


# --- Webhook URLs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A vetted webhook URL: what to connect to (`addresses`, each checked) and what to say
    (`host` for TLS and the Host header, `path`)."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast only: not loopback, private, link-local, site-local, multicast,
    reserved, unspecified, shared (100.64/10), 'this network' (0/8), nor an IPv6 address that
    embeds one of those (IPv4-mapped, NAT64, 6to4) or tunnels (Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip.teredo is not None or ip.is_site_local:
            return False
    if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified):
        return False
    if any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version):
        return False
    return ip.is_global


def host_allowed(host: str) -> bool:
    """The host is named by CHAINS_WEBHOOK_ALLOWED_HOSTS: exactly, or under an entry that
    starts with a dot (".internal.example" allows "hooks.internal.example")."""
    host = host.lower().rstrip(".")
    for entry in settings.CHAINS_WEBHOOK_ALLOWED_HOSTS:
        entry = entry.strip().lower().rstrip(".")
        if entry and (host == entry or (entry.startswith(".") and host.endswith(entry))):
            return True
    return False


def webhook_target(url: str, *, field: str = "url") -> Target:
    """The URL checked and its host resolved, or a ChainError naming `field` and why."""
    if len(url) > 2000:
        raise _refuse(field, "must be at most 2000 characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _refuse(field, f"is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.CHAINS_WEBHOOK_ALLOW_HTTP:
        raise _refuse(field, "must be an https URL (http is allowed only with "
                             "CHAINS_WEBHOOK_ALLOW_HTTP)")
    if scheme not in ("http", "https"):
        raise _refuse(field, "must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise _refuse(field, "must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse(field, "has no host")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _refuse(field, f"host {host} does not resolve") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _refuse(field, f"host {host} does not resolve")
    if not host_allowed(host):
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError as exc:
                raise _refuse(field, f"host {host} resolves to {address}, not an address "
                                     "that can be checked") from exc
            if not is_public_address(ip):
                raise _refuse(field, f"host {host} resolves to {ip}, which is not a public "
                                     "address (see CHAINS_WEBHOOK_ALLOWED_HOSTS)")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


# --- Sending a webhook ----------------------------------------------------------------------


def _connect(addresses: Iterable[str], port: int, timeout: float) -> socket.socket:
    """A socket to the first of the vetted addresses that answers (never a name: no second
    DNS lookup between the check and the connection)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a checked address; `host` is only the Host header."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.addresses = target.addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout or 5)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address; `host` is the TLS server name (SNI, certificate check)
    and the Host header."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self.tls)
        self.addresses = target.addresses

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.timeout or 5)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of `<timestamp>.<body>` with the secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def webhook_send(*, url: str, secret: str, payload: dict[str, Any]) -> int:
    """POST the payload, signed; the response's status code if 2xx. DeliveryRefused for a
    refused URL, a redirect or another 4xx; DeliveryFailed for what may pass."""
    try:
        target = webhook_target(url)
    except ChainError as exc:
        raise DeliveryRefused(f"refused: {exc.message}") from exc
    body = body_bytes(payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "task-chain-webhook",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "X-Task-Chain-Event": str(payload.get("event", "")),
        "X-Task-Chain-Delivery": str(payload.get("delivery_id", "")),
    }
    timeout = float(settings.CHAINS_WEBHOOK_TIMEOUT)
    connection: http.client.HTTPConnection = (
        PinnedHTTPSConnection(target, timeout) if target.scheme == "https"
        else PinnedHTTPConnection(target, timeout))
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        code = response.status
        location = response.getheader("Location") or ""
        snippet = response.read(RESPONSE_SNIPPET).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        connection.close()
    if 200 <= code < 300:
        return code
    if 300 <= code < 400:
        raise DeliveryRefused(f"HTTP {code}: redirect to {location or '(no Location)'} "
                              "not followed", code)
    if code in (408, 429) or code >= 500:
        raise DeliveryFailed(f"HTTP {code}: {snippet}".strip(), code)
    raise DeliveryRefused(f"HTTP {code}: {snippet}".strip(), code)


# --- Email ----------------------------------------------------------------------------------


def rule_recipients(rule: NotificationRule) -> list[str]:
    """The rule's addresses, then its group's active members' addresses, each once."""
    out: list[str] = []
    members: list[str] = []
    if rule.group:
        members = list(get_user_model().objects.filter(groups__name=rule.group, is_active=True)
                       .exclude(email="").order_by("pk").values_list("email", flat=True))
    for address in [*rule.emails, *members]:
        if address and address.lower() not in {a.lower() for a in out}:
            out.append(address)
    return out


def email_send(*, rule: NotificationRule, payload: dict[str, Any]) -> None:
    recipients = rule_recipients(rule)
    if not recipients:
        raise DeliveryRefused("no recipients: no address and no group member with an email")
    chain = payload.get("chain", {}).get("name", "")
    label = NotificationEvent(payload["event"]).label.lower()
    subject = f"[Task Chain] {chain}: {label} (run {payload['run_id']})"
    lines = [f"Chain: {chain}", f"Event: {label}", f"Run: {payload['run_id']}",
             f"Status: {payload['status']}"]
    if payload.get("error"):
        lines.append(f"Error: {payload['error']}")
    for key in ("created_at", "started_at", "finished_at"):
        lines.append(f"{key.replace('_', ' ').capitalize()}: {payload.get(key) or '-'}")
    if payload.get("duration_seconds") is not None:
        lines.append(f"Duration: {payload['duration_seconds']:.1f} s")
    lines.append(f"Run page: {payload['url']}")
    try:
        send_mail(subject, "\n".join(lines) + "\n", None, recipients)
    except Exception as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc


# --- Rules ----------------------------------------------------------------------------------


def _clean_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events:
        raise _refuse("events", f"must be a non-empty list of {', '.join(sorted(EVENTS))}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise _refuse("events", f"unknown event {unknown[0]!r}: choose from "
                                f"{', '.join(sorted(EVENTS))}")
    return [e for e in NotificationEvent.values if e in events]


def rule_check(*, channel: str, events: Any, emails: Any = (), group: str = "",
               url: str = "", secret: str = "") -> dict[str, Any]:
    """The rule's fields cleaned, or a ChainError naming the field (a webhook URL is vetted
    as a delivery would vet it: scheme, host, every address it resolves to)."""
    if channel not in NotificationChannel.values:
        raise _refuse("channel", "must be email or webhook")
    cleaned: dict[str, Any] = {"channel": channel, "events": _clean_events(events),
                               "emails": [], "group": "", "url": "", "secret": ""}
    if channel == NotificationChannel.EMAIL:
        if isinstance(emails, str):
            emails = [e for e in emails.replace(",", " ").split() if e]
        if not isinstance(emails, list | tuple):
            raise _refuse("emails", "must be a list of addresses")
        for address in emails:
            try:
                validate_email(address)
            except (ValidationError, TypeError) as exc:
                raise _refuse("emails", f"{address!r} is not an email address") from exc
        if group and not Group.objects.filter(name=group).exists():
            raise _refuse("group", f"no group named {group!r}")
        if not emails and not group:
            raise _refuse("emails", "give addresses, a group, or both")
        cleaned.update(emails=list(emails), group=group)
    else:
        if not url:
            raise _refuse("url", "a webhook needs a URL")
        webhook_target(url)
        if secret and len(secret) < 16:
            raise _refuse("secret", "must be at least 16 characters (empty: one is made)")
        cleaned.update(url=url.strip(), secret=secret or secrets.token_urlsafe(32))
    return cleaned


def rule_save(*, chain: Chain, rule: NotificationRule | None = None, channel: str,
              events: Any, emails: Any = (), group: str = "", url: str = "",
              secret: str = "", enabled: bool = True, user: Any = None) -> NotificationRule:
    """Create or change a rule (a webhook's secret is kept when none is given, made when a
    new rule has none)."""
    if rule is not None and not secret and channel == rule.channel:
        secret = rule.secret
    cleaned = rule_check(channel=channel, events=events, emails=emails, group=group, url=url,
                         secret=secret)
    if rule is None:
        rule = NotificationRule(chain=chain, created_by=user if user and user.pk else None)
    rule.chain = chain
    for name, value in cleaned.items():
        setattr(rule, name, value)
    rule.enabled = enabled
    rule.save()
    return rule


def rule_delete(*, rule: NotificationRule) -> None:
    rule.delete()


# --- Events ---------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def run_url(run: Run) -> str:
    return str(settings.CHAINS_SITE_URL).rstrip("/") + reverse("admin:chains_run_change",
                                                          args=[run.pk])


def run_payload(run: Run, event: str) -> dict[str, Any]:
    """What a delivery says about a run (its delivery_id is added when it is created)."""
    duration = None
    if run.started_at:
        end = run.finished_at or timezone.now()
        duration = round((end - run.started_at).total_seconds(), 3)
    return {
        "event": event,
        "run_id": str(run.pk),
        "chain": {"id": run.chain_id, "name": run.chain.name if run.chain else ""},
        "status": run.status,
        "error": run.error,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_seconds": duration,
        "url": run_url(run),
    }


def run_is_slow(run: Run) -> bool:
    """The run took longer than the p95 of its chain's last completed runs (at least
    SLOW_MIN_SAMPLE of them, this one excluded)."""
    if not (run.started_at and run.finished_at):
        return False
    p95 = selectors.run_duration_p95(run, sample=SLOW_SAMPLE, minimum=SLOW_MIN_SAMPLE)
    return p95 is not None and (run.finished_at - run.started_at).total_seconds() > p95


def _deliveries_create(run: Run, events: list[str], occurrence: str) -> list[int]:
    """A Delivery per enabled rule of the run's chain and event it asks for (once per
    occurrence: an event sent again adds nothing)."""
    rules = [rule for rule in NotificationRule.objects.filter(chain=run.chain, enabled=True)
             if set(rule.events) & set(events)]
    if not rules:
        return []
    if NotificationEvent.RUN_SLOW in events and not run_is_slow(run):
        events = [e for e in events if e != NotificationEvent.RUN_SLOW]
    created: list[int] = []
    with transaction.atomic():
        for rule in rules:
            for event in events:
                if event not in rule.events or Delivery.objects.filter(
                        rule=rule, run=run, event=event, occurrence=occurrence,
                        resend_of__isnull=True).exists():
                    continue
                delivery = Delivery.objects.create(rule=rule, run=run, event=event,
                                                   occurrence=occurrence,
                                                   payload=run_payload(run, event))
                delivery.payload["delivery_id"] = delivery.pk
                Delivery.objects.filter(pk=delivery.pk).update(payload=delivery.payload)
                created.append(delivery.pk)
        transaction.on_commit(partial(_enqueue_all, created))
    return created


def _enqueue_all(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        delivery_enqueue(delivery_id)


def notify_run_ended(*, run_id: Any, chain_id: Any = None) -> list[int]:
    """After a run's end commits: deliveries for run_failed / run_completed and, when it took
    longer than usual, run_slow. Never raises. Given the run's `chain_id`, a chain without an
    enabled rule costs one query."""
    try:
        if chain_id is not None and not NotificationRule.objects.filter(
                chain_id=chain_id, enabled=True).exists():
            return []
        run = Run.objects.select_related("chain").filter(pk=run_id).first()
        if run is None or run.chain_id is None:
            return []
        events = {RunStatus.FAILED: [NotificationEvent.RUN_FAILED, NotificationEvent.RUN_SLOW],
                  RunStatus.COMPLETED: [NotificationEvent.RUN_COMPLETED,
                                        NotificationEvent.RUN_SLOW]}.get(
            RunStatus(run.status), [])
        if not events:
            return []
        return _deliveries_create(run, [str(e) for e in events], f"end:{run.retries}")
    except Exception:
        logger.exception("notifications for the end of run %s could not be made", run_id)
        return []


def notify_run_waiting(*, run_id: Any, step_run_id: int | None = None) -> list[int]:
    """After a run starts waiting for an approval commits: run_waiting deliveries (once per
    approval asked). Never raises."""
    try:
        run = Run.objects.select_related("chain").filter(pk=run_id).first()
        if run is None or run.chain_id is None or run.status != RunStatus.WAITING:
            return []
        task_id = ""
        if step_run_id is not None:
            task_id = (StepRun.objects.filter(pk=step_run_id)
                       .values_list("task_id", flat=True).first() or "")
        return _deliveries_create(run, [NotificationEvent.RUN_WAITING.value],
                                  f"wait:{step_run_id or ''}:{task_id}")
    except Exception:
        logger.exception("notifications for run %s waiting could not be made", run_id)
        return []


# --- Delivering -----------------------------------------------------------------------------


def delivery_backoff(retries: int) -> float:
    """Seconds before retry number `retries + 1`: CHAINS_NOTIFY_BACKOFF_SECONDS * 2**retries,
    at most CHAINS_NOTIFY_BACKOFF_MAX_SECONDS, plus up to a quarter of it at random (jitter:
    deliveries that failed together do not come back together). Whatever the settings, the
    wait with its jitter stays within half the broker's visibility timeout: Redis would hand
    a message held longer to a second worker (the same delivery sent twice)."""
    base = float(settings.CHAINS_NOTIFY_BACKOFF_SECONDS)
    ceiling = min(float(settings.CHAINS_NOTIFY_BACKOFF_MAX_SECONDS),
                  settings.CHAINS_VISIBILITY_TIMEOUT / 2 / 1.25)
    delay = min(ceiling, base * 2 ** retries)
    return float(delay + random.uniform(0, delay / 4))


def _fail(delivery_id: int, error: str, status_code: int | None = None) -> None:
    failed = Delivery.objects.filter(pk=delivery_id).exclude(
        status=DeliveryStatus.FAILED).update(status=DeliveryStatus.FAILED, error=error[:2000],
                                             status_code=status_code)
    if failed:
        row = (Delivery.objects.filter(pk=delivery_id)
               .values_list("rule__channel", "event").first())
        if row is not None:
            metrics_delivery_failed(channel=row[0], event=row[1])


def delivery_enqueue(delivery_id: int) -> None:
    """Hand the delivery to a worker on the general queue; a broker that refuses fails the
    delivery (recorded), never the caller."""
    try:
        app.send_task(DELIVER_TASK, args=[delivery_id], queue=DELIVERY_QUEUE)
    except Exception as exc:
        logger.warning("delivery %s could not be queued: %s", delivery_id, exc)
        _fail(delivery_id, f"could not be queued: {type(exc).__name__}: {exc}")


def delivery_attempt(*, delivery_id: int, last: bool) -> bool:
    """One attempt at a pending delivery. Returns True when it should be tried again (a
    failure that may pass, and `last` is False); otherwise the delivery ends sent or failed,
    with its attempts, status code and error. Never raises."""
    delivery = (Delivery.objects.select_related("rule").filter(pk=delivery_id).first())
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return False
    Delivery.objects.filter(pk=delivery_id).update(attempts=F("attempts") + 1)
    rule = delivery.rule
    code: int | None = None
    try:
        if rule.channel == NotificationChannel.WEBHOOK:
            code = webhook_send(url=rule.url, secret=rule.secret, payload=delivery.payload)
        else:
            email_send(rule=rule, payload=delivery.payload)
    except DeliveryRefused as exc:
        _fail(delivery_id, str(exc.args[0]), exc.args[1] if len(exc.args) > 1 else None)
        return False
    except Exception as exc:
        error = str(exc.args[0]) if isinstance(exc, DeliveryFailed) else (
            f"{type(exc).__name__}: {exc}")
        status_code = exc.args[1] if isinstance(exc, DeliveryFailed) and len(exc.args) > 1 \
            else None
        if last:
            _fail(delivery_id, error, status_code)
            return False
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
            error=error[:2000], status_code=status_code)
        return True
    Delivery.objects.filter(pk=delivery_id).update(
        status=DeliveryStatus.SENT, status_code=code, error="", sent_at=timezone.now())
    return False


def delivery_resend(*, delivery: Delivery) -> Delivery:
    """A new delivery of the same event (its payload as first made, a new delivery_id),
    queued once this commits."""
    with transaction.atomic():
        again = Delivery.objects.create(rule=delivery.rule, run=delivery.run,
                                        event=delivery.event, occurrence=delivery.occurrence,
                                        resend_of=delivery, payload=delivery.payload)
        again.payload = {**delivery.payload, "delivery_id": again.pk}
        again.save(update_fields=["payload"])
        transaction.on_commit(partial(delivery_enqueue, again.pk))
    return again
