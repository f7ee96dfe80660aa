"""Notifications in the admin: a chain's rules (saved through services.rule_save, so a webhook
URL is checked as the API checks it) and their deliveries, read-only, with Resend."""
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from chains import services
from chains.errors import ChainError
from chains.models import Delivery, NotificationRule
from chains.notification_models import NotificationEvent
from chains.permissions import can_edit_chain


class NotificationRuleForm(forms.ModelForm):
    url = forms.URLField(required=False, max_length=2000, assume_scheme="https",
                         widget=forms.URLInput(attrs={"size": 80}),
                         help_text="Webhook: an https URL (public addresses only).")
    events = forms.MultipleChoiceField(choices=NotificationEvent.choices,
                                       widget=forms.CheckboxSelectMultiple)
    emails = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Email: addresses, separated by commas.")
    secret = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 60}),
                             help_text="Webhook: the key deliveries are signed with (at least "
                             "16 characters); left empty, one is made (or the current one "
                             "kept).")

    class Meta:
        model = NotificationRule
        fields = ["chain", "events", "channel", "emails", "group", "url", "secret", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["emails"] = ", ".join(self.instance.emails)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            self.checked = services.notifications.rule_check(
                channel=data["channel"], events=list(data["events"]),
                emails=data.get("emails") or "", group=data.get("group") or "",
                url=data.get("url") or "",
                secret=data.get("secret") or (self.instance.secret if self.instance.pk
                                              else ""))
        except ChainError as exc:
            for field, reasons in exc.errors.items():
                self.add_error(field if field in self.fields else None, reasons)
        return data


@admin.register(NotificationRule)
class NotificationRuleAdmin(admin.ModelAdmin):
    form = NotificationRuleForm

    class Media:
        css = {"all": ["chains/admin.css"]}

    list_display = ["chain", "channel", "events_shown", "target", "enabled", "created_at"]
    list_filter = ["channel", "enabled"]
    list_select_related = ["chain"]
    search_fields = ["chain__name", "url", "group"]

    @admin.display(description="events")
    def events_shown(self, rule: NotificationRule) -> str:
        return ", ".join(NotificationEvent(e).label for e in rule.events)

    @admin.display(description="to")
    def target(self, rule: NotificationRule) -> str:
        if rule.channel == "webhook":
            return rule.url
        return ", ".join([*rule.emails, *([f"group {rule.group}"] if rule.group else [])])

    def save_model(self, request: HttpRequest, obj: NotificationRule,
                   form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if not can_edit_chain(request.user, data["chain"]):
            raise PermissionDenied("you may not edit this chain's notifications")
        saved = services.rule_save(
            chain=data["chain"], rule=obj if change else None, channel=data["channel"],
            events=list(data["events"]), emails=data.get("emails") or "",
            group=data.get("group") or "", url=data.get("url") or "",
            secret=data.get("secret") or "", enabled=data["enabled"], user=request.user)
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: NotificationRule) -> None:
        services.rule_delete(rule=obj)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    # Fits a 1400 px window beside the filters; when it was sent is on the delivery's page.
    list_display = ["event", "chain", "run_link", "status", "attempts", "status_code",
                    "error_shown", "created"]
    list_display_links = ["event"]
    list_filter = ["status", "event", "rule__channel"]
    list_select_related = ["rule__chain"]
    fields = readonly_fields = ("rule", "run_link", "event", "status", "attempts",
                                "status_code", "error", "created_at", "sent_at", "resend_of",
                                "payload")
    actions = ["resend_selected"]

    class Media:
        css = {"all": ["chains/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="chain", ordering="rule__chain__name")
    def chain(self, delivery: Delivery) -> str:
        return delivery.rule.chain.name

    @admin.display(description="run")
    def run_link(self, delivery: Delivery) -> str:
        url = reverse("admin:chains_run_change", args=[delivery.run_id])
        return format_html('<a href="{}">{}</a>', url, str(delivery.run_id)[:8])

    @admin.display(description="created", ordering="created_at")
    def created(self, delivery: Delivery) -> str:
        return timezone.localtime(delivery.created_at).strftime("%b %d %H:%M:%S")

    @admin.display(description="error")
    def error_shown(self, delivery: Delivery) -> str:
        return delivery.error if len(delivery.error) <= 80 else delivery.error[:79] + "…"

    def _resend(self, request: HttpRequest, deliveries: QuerySet[Delivery]) -> int:
        sent = 0
        for delivery in deliveries.select_related("rule__chain", "run"):
            if not can_edit_chain(request.user, delivery.rule.chain):
                self.message_user(request, f"Delivery {delivery.pk}: you may not edit "
                                  f"{delivery.rule.chain}'s notifications", messages.ERROR)
                continue
            again = services.delivery_resend(delivery=delivery)
            sent += 1
            self.message_user(request, f"Delivery {again.pk} queued (again for delivery "
                              f"{delivery.pk}).", messages.SUCCESS)
        return sent

    @admin.action(description="Resend selected deliveries")
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._resend(request, queryset)

    def get_urls(self) -> list[Any]:
        return [path("<int:delivery_id>/resend/",
                     self.admin_site.admin_view(require_POST(self.resend_view)),
                     name="chains_delivery_resend"), *super().get_urls()]

    def resend_view(self, request: HttpRequest, delivery_id: int) -> HttpResponseRedirect:
        if not self.has_view_permission(request):
            raise PermissionDenied
        delivery = get_object_or_404(Delivery, pk=delivery_id)
        self._resend(request, Delivery.objects.filter(pk=delivery.pk))
        return HttpResponseRedirect(reverse("admin:chains_delivery_changelist"))
