"""Notifications: per-chain rules (which events, which channel) and the deliveries they make.
Imported by chains.models, so they belong to the chains app like every other model."""
from django.conf import settings
from django.db import models


class NotificationEvent(models.TextChoices):
    RUN_FAILED = "run_failed", "Run failed"
    RUN_COMPLETED = "run_completed", "Run completed"
    RUN_WAITING = "run_waiting", "Run waiting for approval"
    RUN_SLOW = "run_slow", "Run slower than the chain's usual p95"


class NotificationChannel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class NotificationRule(models.Model):
    """On which of a chain's events, to whom: email (addresses and/or a group's members) or a
    signed webhook."""

    chain = models.ForeignKey("chains.Chain", on_delete=models.CASCADE,
                              related_name="notification_rules")
    events = models.JSONField(default=list, help_text="Any of run_failed, run_completed, "
                              "run_waiting, run_slow.")
    channel = models.CharField(max_length=16, choices=NotificationChannel.choices)
    emails = models.JSONField(default=list, blank=True,
                              help_text="Email: the addresses to write to.")
    group = models.CharField(max_length=150, blank=True,
                             help_text="Email: a Django group whose members are written to.")
    url = models.URLField(max_length=2000, blank=True,
                          help_text="Webhook: an https URL (public addresses only).")
    secret = models.CharField(max_length=200, blank=True,
                              help_text="Webhook: the key its deliveries are signed with.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chain_id", "id"]

    def __str__(self) -> str:
        target = self.url if self.channel == NotificationChannel.WEBHOOK else ", ".join(
            [*self.emails, *([f"group {self.group}"] if self.group else [])])
        return f"{self.chain} {self.channel} {target}"


class Delivery(models.Model):
    """One notification of one event of one run through one rule, and how sending it went."""

    rule = models.ForeignKey(NotificationRule, on_delete=models.CASCADE,
                             related_name="deliveries")
    run = models.ForeignKey("chains.Run", on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    occurrence = models.CharField(max_length=300, blank=True,
                                  help_text="Which end or wait of the run this is about.")
    resend_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["rule", "run", "event"], name="delivery_rule_run_event")]

    def __str__(self) -> str:
        return f"{self.event} of run {self.run_id} ({self.status})"
