"""Admin forms: a step's params edited through a form generated from its step type's schema."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db import models
from django.forms.fields import JSONString
from django_jsonform.widgets import JSONFormWidget

from chains import services
from chains.bounds import parse_json
from chains.errors import ChainError
from chains.login_guard import is_locked, locked_message
from chains.models import ChainSchedule, Step
from chains.presets import StepSpec
from chains.steps import STEP_TYPES, StepType

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class BoundedJSONFormField(forms.JSONField):
    """The admin's JSON boxes: a value nested deeper than CHAINS_MAX_JSON_DEPTH is a form
    error, not a RecursionError. An empty value (None) shows as an empty box, as the fields'
    help ("Empty means ...") says, not as `null`."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)

    def to_python(self, value):
        if not isinstance(value, str) or not value.strip() or self.disabled:
            return super().to_python(value)
        try:
            converted = parse_json(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from exc
        return JSONString(converted) if isinstance(converted, str) else converted


JSON_FIELD_OVERRIDES: dict[type[models.Field], dict[str, Any]] = {
    models.JSONField: {"form_class": BoundedJSONFormField}}

FREE_FORM = {"type": "dict", "keys": {}, "additionalProperties": True}
# How deep a params form or table follows nested models: a model that contains itself stops
# here (the rest is edited as free JSON).
MAX_NESTING = 6


def _form_property(schema: dict, defs: dict | None = None, depth: int = 0) -> dict:
    """One property of a pydantic JSON schema in the dialect django-jsonform renders: enums
    as choices, nested models as sub-forms, lists of either."""
    defs = defs or {}
    if depth > MAX_NESTING:
        return FREE_FORM
    schema = _resolved(schema, defs)
    options = [_resolved(option, defs) for option in schema.get("anyOf", [])
               if option.get("type") != "null"]
    merged = {**schema, **(options[0] if options else {})}
    merged.pop("anyOf", None)
    if merged.get("type") == "object" and "properties" in merged:
        nested = {"type": "dict", "keys": {name: _form_property(prop, defs, depth + 1)
                                           for name, prop in merged["properties"].items()},
                  "required": merged.get("required", [])}
        if "title" in merged:
            nested["title"] = merged["title"]
        return nested
    out = {key: merged[key] for key in ("type", "title", "minimum", "maximum", "enum",
                                         "minItems", "maxItems") if key in merged}
    if "description" in merged:
        out["help_text"] = merged["description"]
    if "default" in merged and merged["default"] is not None:
        out["default"] = merged["default"]
    if "enum" in merged:
        out["choices"] = merged["enum"]
    if merged.get("type") == "array":
        out["items"] = _form_property(merged.get("items", {"type": "string"}), defs, depth + 1)
    if "type" not in out:
        out["type"] = "string"
    return out


def params_form_schema(step_type: StepType) -> dict:
    schema = step_type.params_schema()
    defs = schema.get("$defs", {})
    return {
        "type": "dict",
        "title": step_type.description,
        "keys": {name: _form_property(prop, defs)
                 for name, prop in schema.get("properties", {}).items()},
        "required": schema.get("required", []),
    }


def params_rows(schema: dict, *, prefix: str = "", defs: dict | None = None,
                depth: int = 0) -> list[dict]:
    """A params JSON schema as rows a person reads: name (dotted inside nested models), type,
    required or default, and description with bounds."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if depth > MAX_NESTING:
        return []
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        prop = _resolved(prop, defs)
        options = [_resolved(o, defs) for o in prop.get("anyOf", []) if o.get("type") != "null"]
        shape = {**prop, **(options[0] if options else {})}
        kind = shape.get("type", "any")
        if "enum" in shape:
            kind = "one of " + ", ".join(map(str, shape["enum"]))
        elif kind == "array":
            item = _resolved(shape.get("items", {}), defs)
            kind = f"list of {item.get('title', item.get('type', 'any'))}"
        elif kind == "object" and "properties" in shape:
            kind = f"object ({shape.get('title', name)})"
        bounds = [phrase.format(shape[key]) for key, phrase in (
            ("minimum", "at least {}"), ("maximum", "at most {}"),
            ("minItems", "at least {} items"), ("maxItems", "at most {} items"),
            ("maxLength", "at most {} characters")) if key in shape]
        rows.append({"name": prefix + name, "type": kind + (" or null" if len(
            prop.get("anyOf", [])) > len(options) else ""),
            "required": name in required, "default": prop.get("default"),
            "description": "; ".join(part for part in [
                prop.get("description", "").rstrip("."), *bounds] if part)})
        if kind.startswith("object (") or (shape.get("type") == "array" and "properties" in
                                           _resolved(shape.get("items", {}), defs)):
            inner = shape if kind.startswith("object (") else _resolved(shape["items"], defs)
            rows += params_rows(inner, prefix=f"{prefix}{name}.", defs=defs, depth=depth + 1)
    return rows


def _resolved(schema: dict, defs: dict) -> dict:
    """`schema` with its $ref (or a lone allOf, as pydantic writes a described reference)
    replaced by the definition it points to."""
    if len(schema.get("allOf", [])) == 1:
        schema = {**schema, **schema["allOf"][0]}
        schema.pop("allOf")
    if "$ref" in schema:
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


class StepInlineForm(forms.ModelForm):
    """The params box becomes a form for the row's step type (after a change of type, the
    chain builder's script swaps in the new type's form)."""

    class Meta:
        model = Step
        fields = ["position", "stage", "name", "step_type", "params", "max_retries",
                  "time_limit", "queue"]
        widgets = {"position": forms.HiddenInput(attrs={"class": "tc-position"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The type as posted (a page shown again with errors keeps each row's own form), else
        # the saved one; a new row starts free-form until a type is picked.
        key = (self.data.get(self.add_prefix("step_type")) if self.is_bound
               else self.instance.step_type)
        schema = params_form_schema(STEP_TYPES[key]) if key in STEP_TYPES else FREE_FORM
        self.fields["params"].widget = JSONFormWidget(schema=schema)
        self.fields["params"].required = False
        self.fields["step_type"].widget.attrs["class"] = "tc-step-type"

    def clean_params(self):
        value = self.cleaned_data.get("params")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("params must be an object of named values")
        return value


class LockAwareAdminLoginForm(AdminAuthenticationForm):
    """The admin's sign-in form, saying so when the name or address is locked after too many
    failures (rather than "wrong password")."""

    def clean(self):
        if is_locked(self.cleaned_data.get("username"), self.request):
            raise forms.ValidationError(locked_message(), code="locked")
        return super().clean()


def _errors_onto_forms(error: ChainError, forms: list, prefix: str) -> list[str]:
    """Puts a service's errors ("steps.1.params.numbers.0": [...]) on the rows they name, as
    the API reports them; returns those that name no row."""
    loose: list[str] = []
    for key, reasons in error.errors.items():
        parts = key.split(".")
        if parts[0] == prefix and len(parts) >= 3 and parts[1].isdigit() and int(
                parts[1]) < len(forms):
            form, field, rest = forms[int(parts[1])], parts[2], ".".join(parts[3:])
            messages = [f"{rest}: {reason}" if rest else reason for reason in reasons]
            form.add_error(field if field in form.fields else None, messages)
        else:
            loose += [reason if parts[0] == prefix else f"{key}: {reason}" for reason in reasons]
    return loose


class StepInlineFormSet(forms.BaseInlineFormSet):
    """The chain's steps, checked as a whole by the API's rules
    (chains.services.validate_step_specs, then check_stage_fit with the chain's default inputs
    as the form has them): errors land on the rows they name and nothing is saved. `specs`
    holds the checked steps for chains.services.chain_save."""

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        kept = sorted((form for form in self.forms if form.cleaned_data
                       and not form.cleaned_data.get("DELETE")),
                      key=lambda form: form.cleaned_data.get("position") or 0)
        specs = [StepSpec(
            step_type=data["step_type"], params=data.get("params") or {},
            stage=data.get("stage") or 0, name=data.get("name") or "",
            max_retries=data.get("max_retries") or 0, time_limit=data.get("time_limit"),
            queue=data.get("queue") or "") for data in (form.cleaned_data for form in kept)]
        try:
            self.specs = services.validate_step_specs(specs)
            services.check_stage_fit(self.specs, default_inputs=self.instance.default_inputs)
        except ChainError as exc:
            loose = _errors_onto_forms(exc, kept, "steps")
            if loose:
                raise forms.ValidationError(loose) from exc


class ScheduleInlineFormSet(forms.BaseInlineFormSet):
    """The chain's schedules, checked by chains.services.schedule_check (the API's rules,
    for the signed-in user) before anything is saved."""

    def __init__(self, *args: Any, user: User | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user  # given per request by ChainAdmin.get_formset_kwargs

    def clean(self) -> None:
        super().clean()
        for form in self.forms:
            if form.errors or not form.has_changed() or form.cleaned_data.get("DELETE"):
                continue
            fields = {name: value for name, value in form.cleaned_data.items()
                      if name in services.SCHEDULE_FIELDS}
            current = ChainSchedule.objects.filter(pk=form.instance.pk).first()
            try:
                services.schedule_check(schedule=current, chain=self.instance, user=self.user,
                                        fields=fields)
            except ChainError as exc:
                for key, reasons in exc.errors.items():
                    form.add_error(key if key in form.fields else None, reasons)


class ChainForm(forms.ModelForm):
    """The chain's own fields, checked by the API's rules (chains.services.check_chain_fields)
    so that saving through the service cannot fail afterwards."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            services.check_chain_fields(name=data.get("name") or "",
                                        description=data.get("description") or "",
                                        default_inputs=data.get("default_inputs"))
        except ChainError as exc:
            for key, reasons in exc.errors.items():
                self.add_error(key if key in self.fields else None, reasons)
        return data
