"""API of notifications: a chain's rules (/api/notification-rules/, for staff and the chain's
editors: chains.permissions.can_edit_chain) and their deliveries, read-only, with resend
(/api/deliveries/)."""
import uuid
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from chains import selectors, services
from chains.api.base import ChainsAPI
from chains.api.errors import as_api_error
from chains.errors import ChainError
from chains.models import Chain, Delivery, NotificationRule
from chains.notification_models import NotificationChannel, NotificationEvent
from chains.permissions import can_edit_chain, signed_in


class NotificationRuleSerializer(serializers.ModelSerializer):
    chain = serializers.PrimaryKeyRelatedField(queryset=Chain.objects.all())
    events = serializers.ListField(child=serializers.ChoiceField(NotificationEvent.choices),
                                   allow_empty=False, max_length=len(NotificationEvent.values))
    channel = serializers.ChoiceField(NotificationChannel.choices)
    emails = serializers.ListField(child=serializers.CharField(max_length=254), required=False,
                                   max_length=100)
    secret = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                   help_text="The key deliveries are signed with; one is made "
                                   "when a webhook rule is created without one.")

    class Meta:
        model = NotificationRule
        fields = ["id", "chain", "events", "channel", "emails", "group", "url", "secret",
                  "enabled", "created_at"]
        read_only_fields = ["created_at"]


class DeliverySerializer(serializers.ModelSerializer):
    chain = serializers.CharField(source="rule.chain.name", read_only=True)
    channel = serializers.CharField(source="rule.channel", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "rule", "chain", "channel", "run", "event", "status", "attempts",
                  "status_code", "error", "created_at", "sent_at", "resend_of", "payload"]
        read_only_fields = fields


class NotificationRuleViewSet(ChainsAPI, viewsets.ModelViewSet):
    serializer_class = NotificationRuleSerializer
    lookup_value_regex = r"\d{1,18}"

    def get_queryset(self):
        return selectors.notification_rules_editable_by(self.request.user)

    def _save(self, serializer: serializers.BaseSerializer,
              rule: NotificationRule | None = None) -> Response:
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = {**self._current(rule), **serializer.validated_data}
        chain = data["chain"]
        if not can_edit_chain(self.request.user, chain):
            raise PermissionDenied({"chain": ["you may not edit this chain's notifications"]})
        try:
            rule = services.rule_save(
                chain=chain, rule=rule, channel=data["channel"], events=data["events"],
                emails=data.get("emails", []), group=data.get("group", ""),
                url=data.get("url", ""), secret=data.get("secret", ""),
                enabled=data.get("enabled", True), user=signed_in(self.request.user))
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(NotificationRuleSerializer(rule).data,
                        status=status.HTTP_200_OK if serializer.instance else
                        status.HTTP_201_CREATED)

    @staticmethod
    def _current(rule: NotificationRule | None) -> dict[str, Any]:
        if rule is None:
            return {}
        return {"chain": rule.chain, "channel": rule.channel, "events": rule.events,
                "emails": rule.emails, "group": rule.group, "url": rule.url,
                "enabled": rule.enabled}

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._save(self.get_serializer(data=request.data))

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        return self._save(self.get_serializer(rule, data=request.data,
                                              partial=kwargs.get("partial", False)), rule)

    def perform_destroy(self, instance: NotificationRule) -> None:
        services.rule_delete(rule=instance)


class DeliveryViewSet(ChainsAPI, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      viewsets.GenericViewSet):
    """Deliveries of the rules the user may edit; ?run=, ?rule=, ?status= narrow the list."""

    serializer_class = DeliverySerializer
    lookup_value_regex = r"\d{1,18}"

    def get_queryset(self):
        deliveries = selectors.deliveries_visible_to(self.request.user)
        params = self.request.query_params
        for name, check in (("run", uuid.UUID), ("rule", int), ("status", str), ("event", str)):
            if params.get(name):
                try:
                    check(params[name])
                except ValueError:
                    return deliveries.none()
                deliveries = deliveries.filter(**{name: params[name]})
        return deliveries

    @extend_schema(request=None, responses={201: DeliverySerializer,
                                            404: OpenApiResponse(description="Not yours")})
    @action(detail=True, methods=["post"])
    def resend(self, request: Request, pk: str | None = None) -> Response:
        """A new delivery of the same event, queued now."""
        delivery = self.get_object()
        again = services.delivery_resend(delivery=delivery)
        return Response(DeliverySerializer(again).data, status=status.HTTP_201_CREATED)
