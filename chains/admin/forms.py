"""Admin forms: a step's params edited through a form generated from its step type's schema."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db import models
from django.forms.fields import JSONString
from django_jsonform.constants import JOIN_SYMBOL
from django_jsonform.widgets import JSONFormWidget

from chains import services
from chains.bounds import parse_json
from chains.conditions import OPS
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

class LabelledWidget(forms.Widget):
    """A widget that carries its own label: in a step row of the chain builder, the second
    line's settings have no column header."""

    template_name = "admin/chains/widgets/labelled.html"
    inner_template = ""

    def __init__(self, attrs: dict[str, Any] | None = None, *, before: str = "",
                 after: str = "") -> None:
        super().__init__(attrs)
        self.before, self.after = before, after

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"].update(inner_template=self.inner_template, label_before=self.before,
                                 label_after=self.after)
        return context

class LabelledCheckbox(LabelledWidget, forms.CheckboxInput):
    inner_template = forms.CheckboxInput.template_name

class LabelledNumber(LabelledWidget, forms.NumberInput):
    inner_template = forms.NumberInput.template_name

NO_CONDITION = ""

class WhenWidget(forms.MultiWidget):
    """A condition as a path, an operator and a JSON value, on one line."""

    template_name = "admin/chains/widgets/when.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__([
            forms.TextInput(attrs={"class": "tc-when-path", "aria-label": "path",
                                   "placeholder": "path: empty = the input"}),
            forms.Select(choices=[(NO_CONDITION, "always"), *((op, op) for op in OPS)],
                         attrs={"class": "tc-when-op", "aria-label": "operator"}),
            forms.TextInput(attrs={"class": "tc-when-value", "aria-label": "value (JSON)",
                                   "placeholder": "value (JSON)"}),
        ], attrs)

    def decompress(self, value: Any) -> list[str]:
        if not isinstance(value, dict):
            return ["", NO_CONDITION, ""]
        shown = json.dumps(value["value"]) if "value" in value else ""
        return [str(value.get("path", "")), str(value.get("op", "")), shown]

class WhenField(forms.MultiValueField):
    """`when` as chains.conditions reads it ({"path", "op", "value"}), or None: no operator
    means no condition. The service (validate_step_specs) judges the condition itself."""

    widget = WhenWidget

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("encoder", None)  # a model JSONField's form arguments
        kwargs.pop("decoder", None)
        super().__init__(fields=(
            forms.CharField(required=False, strip=True),
            forms.ChoiceField(required=False, choices=[(NO_CONDITION, "always"),
                                                       *((op, op) for op in OPS)]),
            forms.CharField(required=False, strip=True),
        ), require_all_fields=False, **{**kwargs, "required": False})

    def compress(self, data_list: list[Any]) -> dict[str, Any] | None:
        path, op, value = [*(data_list or []), "", "", ""][:3]
        if not op:
            if path or value:
                raise forms.ValidationError("pick an operator, or clear the path and the value")
            return None
        when: dict[str, Any] = {"path": path or "", "op": op}
        if value:
            try:
                when["value"] = parse_json(value)
            except ValueError as exc:
                raise forms.ValidationError(
                    'the value is JSON: 100, "text" (in double quotes), [1, 2], true or null'
                ) from exc
        return when

class StepInlineForm(forms.ModelForm):
    """The params box becomes a form for the row's step type (after a change of type, the
    chain builder's script swaps in the new type's form). The second line of the row holds
    the workflow settings: map, the condition and the retry backoff."""

    when = WhenField()

    class Meta:
        model = Step
        fields = ["position", "stage", "name", "step_type", "params", "max_retries",
                  "time_limit", "queue", "map", "when", "retry_backoff", "retry_backoff_max"]
        widgets = {
            "position": forms.HiddenInput(attrs={"class": "tc-position"}),
            "map": LabelledCheckbox(attrs={"class": "tc-map"}, after="map: each item"),
            "retry_backoff": LabelledNumber(
                attrs={"class": "tc-backoff", "min": 1, "placeholder": "2"},
                before="retry backoff", after="s"),
            "retry_backoff_max": LabelledNumber(
                attrs={"class": "tc-backoff", "min": 1, "placeholder": "600"},
                before="at most", after="s"),
        }

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
        self.fields["retry_backoff_max"].required = False  # empty: the default, 600 s
        self.fields["map"].widget.attrs["title"] = Step._meta.get_field("map").help_text
        self.fields["when"].widget.attrs["title"] = Step._meta.get_field("when").help_text

    def clean_params(self):
        value = self.cleaned_data.get("params")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("params must be an object of named values")
        return value

    def clean_retry_backoff_max(self) -> int:
        value = self.cleaned_data.get("retry_backoff_max")
        return 600 if value is None else value

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
    as the form has them, then the sub-chains they call): errors land on the rows they name
    and nothing is saved. `specs` holds the checked steps for chains.services.chain_save."""

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
            queue=data.get("queue") or "", map=bool(data.get("map")), when=data.get("when"),
            retry_backoff=data.get("retry_backoff"),
            retry_backoff_max=data.get("retry_backoff_max") or 600,
        ) for data in (form.cleaned_data for form in kept)]
        try:
            self.specs = services.validate_step_specs(specs)
            services.check_stage_fit(self.specs, default_inputs=self.instance.default_inputs)
            # Sub-chains (unknown, a cycle, too deep) on their rows, as chain_save refuses them.
            services.check_subchains(self.instance.name, self.specs)
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

INPUTS_SCHEMA_HELP = (
    'A JSON Schema the inputs of every run must fit, checked whenever a run starts; the Run now '
    'form is generated from it. E.g. {"type": "object", "properties": {"n": {"type": '
    '"integer", "minimum": 1}}, "required": ["n"]}. Empty: any inputs.')

class ChainForm(forms.ModelForm):
    """The chain's own fields, checked by the API's rules (chains.services.check_chain_fields)
    so that saving through the service cannot fail afterwards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "inputs_schema" in self.fields:
            self.fields["inputs_schema"].help_text = INPUTS_SCHEMA_HELP

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            services.check_chain_fields(name=data.get("name") or "",
                                        description=data.get("description") or "",
                                        default_inputs=data.get("default_inputs"),
                                        inputs_schema=data.get("inputs_schema"))
        except ChainError as exc:
            for key, reasons in exc.errors.items():
                self.add_error(key if key in self.fields else None, reasons)
        return data

# --- Run now: a form generated from the chain's inputs schema -------------------------------

FORM_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array"})
# The one field a schema that is not an object or a list is shown as (django-jsonform draws
# objects and lists only).
WRAPPED = "inputs"
# What the form cannot draw faithfully: such a schema gets the JSON box instead.
UNDRAWN = ("$ref", "anyOf", "oneOf", "allOf", "not", "if", "patternProperties")

def _single_type(schema: dict) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None

def _drawable(schema: Any, depth: int = 0) -> bool:
    """Whether every part of `schema` has one plain type the form draws as a field."""
    if not isinstance(schema, dict) or depth > MAX_NESTING or any(k in schema for k in UNDRAWN):
        return False
    kind = _single_type(schema)
    if kind not in FORM_TYPES:
        return False
    if kind == "object":
        properties = schema.get("properties")
        return (isinstance(properties, dict) and bool(properties)
                and all(_drawable(p, depth + 1) for p in properties.values()))
    if kind == "array":
        return _drawable(schema.get("items"), depth + 1)
    return True

def _form_dialect(schema: dict) -> dict:
    """A drawable JSON Schema in django-jsonform's terms (one type, help_text)."""
    kind = _single_type(schema)
    out: dict[str, Any] = {"type": kind}
    for key in ("title", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                "minItems", "maxItems", "minLength", "maxLength", "enum", "default", "format"):
        if key in schema:
            out[key] = schema[key]
    if "description" in schema:
        out["help_text"] = schema["description"]
    if kind == "object":
        out["keys"] = {name: _form_dialect(prop) for name, prop in schema["properties"].items()}
        out["required"] = [name for name in schema.get("required", []) if name in out["keys"]]
    elif kind == "array":
        out["items"] = _form_dialect(schema["items"])
    return out

def inputs_form_schema(schema: Any) -> tuple[dict, bool] | None:
    """The form the Run now page draws for a chain's inputs schema: (django-jsonform schema,
    wrapped), where `wrapped` says a schema that is neither an object nor a list became the
    one field "inputs" of an object. None: no schema, or one the form cannot draw (the page
    keeps the JSON box, and the service checks the inputs either way)."""
    if not _drawable(schema):
        return None
    if _single_type(schema) in ("object", "array"):
        return _form_dialect(schema), False
    field = {**_form_dialect(schema), "title": schema.get("title") or "Inputs"}
    return {"type": "dict", "keys": {WRAPPED: field}, "required": [WRAPPED]}, True

def _without_empty(value: Any) -> Any:
    """An object's fields left empty on the form ("" or null) are not given."""
    if isinstance(value, dict):
        return {key: _without_empty(item) for key, item in value.items()
                if item not in ("", None)}
    if isinstance(value, list):
        return [_without_empty(item) for item in value]
    return value

def inputs_from_form(data: Any, *, wrapped: bool) -> Any:
    """The run's inputs from what the generated form posted."""
    data = _without_empty(data)
    return data.get(WRAPPED) if wrapped and isinstance(data, dict) else data

def inputs_error_map(errors: dict[str, list[str]], *, wrapped: bool) -> dict[str, list[str]]:
    """A service's input errors ("inputs.rows.0": [...]) as django-jsonform places them on
    the form's fields; errors about the whole value stay off the map (the page lists them)."""
    placed: dict[str, list[str]] = {}
    for key, reasons in errors.items():
        parts = key.split(".")
        if parts[0] != "inputs":
            continue
        coords = ([WRAPPED] if wrapped else []) + parts[1:]
        if coords:
            placed.setdefault(JOIN_SYMBOL.join(coords), []).extend(reasons)
    return placed
