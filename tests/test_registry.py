"""The public step API: declaring step types with @step and register_task, and what a bad
declaration says at startup."""
import enum

import pytest
from celery import shared_task
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

from chains import services
from chains.errors import ChainError
from chains.presets import StepSpec
from chains.steps import STEP_TYPES, StepContext, register_task, step
from chains.steps.registry import KEY

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _registry():
    """Each test declares into the registry; what it adds is taken out again."""
    known = dict(STEP_TYPES)
    yield
    STEP_TYPES.clear()
    STEP_TYPES.update(known)


class Factor(BaseModel):
    factor: int = 2


def test_a_declared_step_is_a_step_type_like_the_built_in_ones():
    @step("shop.double", params=Factor, description="Multiply the previous result.")
    def double(params: Factor, previous, context: StepContext):
        return previous * params.factor

    declared = STEP_TYPES["shop.double"]
    assert (declared.family, declared.default_queue, declared.task_name) == (
        "shop", "shop", "chains.step.shop.double")
    assert declared.execute({"factor": 3}, 7, StepContext("run", 0)) == 21
    assert double(Factor(), 2, StepContext("run", 0)) == 4  # the function is left as it was
    assert declared.validate_params({}) == {"factor": 2}
    # A typo in a param is refused, naming it (the model did not say to ignore extra keys).
    with pytest.raises(ChainError) as info:
        services.chain_save(name="c", steps=[StepSpec("shop.double", {"factr": 3}, 0)])
    assert info.value.errors == {"steps.0.params.factr": ["Extra inputs are not permitted"]}


def test_an_existing_celery_task_becomes_a_step_type():
    @shared_task(name="shop.tasks.invoice")
    def invoice(customer: str, amount: int = 0, previous=None) -> dict:
        return {"customer": customer, "amount": amount + (previous or 0)}

    class InvoiceParams(BaseModel):
        customer: str
        amount: int = 0

    register_task(invoice, key="shop.invoice", params=InvoiceParams)
    declared = STEP_TYPES["shop.invoice"]
    assert declared.execute({"customer": "acme", "amount": 5}, 10, StepContext("r", 0)) == {
        "customer": "acme", "amount": 15}
    assert invoice("acme", 1) == {"customer": "acme", "amount": 1}  # the task itself unchanged


class Colour(enum.Enum):
    RED = "red"


class NotJson(BaseModel):
    when: object = object()


@pytest.mark.parametrize(("declare", "message"), [
    (lambda: step("Shop.Double", params=Factor), "'Shop.Double' is not a valid key"),
    (lambda: step("double", params=Factor), "'double' is not a valid key"),
    (lambda: step("shop.double", params=dict), "which is not a pydantic model"),
    (lambda: step("shop.when", params=NotJson), "has a default for 'when' that is not JSON"),
    (lambda: step("math.add", params=Factor), "'math.add' is already declared by "
                                              "chains.steps.math.math_add"),
    (lambda: step("shop.odd", params=Factor, accepts="cats"), "accepts 'cats'"),
])
def test_a_bad_declaration_is_improperly_configured_naming_module_and_key(declare, message):
    with pytest.raises(ImproperlyConfigured) as info:
        declare()(lambda params, previous, context: None)
    assert str(info.value).startswith("tests.test_registry: step type ")
    assert message in str(info.value)


def test_an_enum_default_is_json():
    class Paint(BaseModel):
        colour: Colour = Colour.RED

    step("shop.paint", params=Paint)(lambda params, previous, context: params.colour.value)
    assert STEP_TYPES["shop.paint"].validate_params({}) == {"colour": "red"}


def test_keys_are_family_dot_name():
    assert KEY.fullmatch("shop.double_2") and not KEY.fullmatch("shop.double.x")


class Address(BaseModel):
    city: str
    zip: str = ""


class Shipping(BaseModel):
    colour: Colour = Colour.RED
    to: Address
    weights: list[float] = []


def test_the_catalogue_and_the_builder_know_declared_steps(admin_client):
    from django.urls import reverse

    from chains.models import Chain, Step

    step("shop.ship", params=Shipping, description="Ship a parcel.")(
        lambda params, previous, context: None)
    chain = services.chain_save(name="shipping", steps=[
        StepSpec("shop.ship", {"to": {"city": "Oslo"}}, 0)])
    gone = Chain.objects.create(name="old")
    Step.objects.create(chain=gone, position=0, step_type="shop.gone")

    page = admin_client.get(reverse("admin:chains_step_types")).content.decode()
    assert '<div class="tc-step-type" id="step-shop.ship">' in page
    assert "<td><code>colour</code></td><td>one of red</td>" in page
    assert "<td><code>to.city</code></td><td>string</td><td>required</td>" in page
    assert "<td><code>weights</code></td><td>list of number</td>" in page
    assert f'<a href="{reverse("admin:chains_chain_change", args=[chain.pk])}">shipping</a>' in page
    assert "<code>shop.gone</code>" in page and "(cannot be started)" in page
    assert 'id="step-math.add"' in page  # built-in ones beside them

    # The builder's picker groups types by family, and the schema form has the enum as
    # choices and the nested model as a sub-form.
    builder = admin_client.get(reverse("admin:chains_chain_add")).content.decode()
    assert '<optgroup label="shop">' in builder and '<optgroup label="math">' in builder
    schema = admin_client.get(reverse("admin:chains_step_form_schema",
                                      args=["shop.ship"])).json()
    assert schema["keys"]["colour"]["choices"] == ["red"]
    assert schema["keys"]["to"]["type"] == "dict"
    assert set(schema["keys"]["to"]["keys"]) == {"city", "zip"}
    assert schema["keys"]["weights"]["type"] == "array"


def test_the_chain_list_says_which_chains_name_unknown_step_types(admin_client):
    from django.urls import reverse

    from chains.models import Chain, Step

    services.chain_save(name="fine", steps=[StepSpec("math.add", {}, 0)])
    gone = Chain.objects.create(name="old")
    Step.objects.create(chain=gone, position=0, step_type="shop.gone")
    page = admin_client.get(reverse("admin:chains_chain_changelist")).content.decode()
    assert '<span class="tc-error">unknown: shop.gone</span>' in page
    assert '<span class="tc-ok">all known</span>' in page
    api = admin_client.post(f"/api/chains/{gone.pk}/run/", {}, content_type="application/json")
    assert api.status_code == 400
    assert api.json() == {"steps.0.step_type": ["unknown step type 'shop.gone'"]}


class Node(BaseModel):
    name: str = ""
    children: list["Node"] = []


def test_a_params_model_that_contains_itself_still_has_a_form_and_a_page(admin_client):
    from django.urls import reverse

    step("shop.tree", params=Node)(lambda params, previous, context: None)
    page = admin_client.get(reverse("admin:chains_step_types"))
    assert page.status_code == 200 and 'id="step-shop.tree"' in page.content.decode()
    schema = admin_client.get(reverse("admin:chains_step_form_schema", args=["shop.tree"]))
    assert schema.status_code == 200
    assert schema.json()["keys"]["children"]["type"] == "array"


def test_register_task_gives_the_body_json_values():
    @shared_task(name="shop.tasks.paint")
    def paint(colour: str) -> str:
        return colour.upper()

    class PaintParams(BaseModel):
        colour: Colour = Colour.RED

    register_task(paint, key="shop.paint_task", params=PaintParams)
    assert STEP_TYPES["shop.paint_task"].execute({}, None, StepContext("r", 0)) == "RED"


def test_the_step_type_api_serves_every_key_the_registry_accepts(admin_client):
    step("my_shop.price_v2", params=Factor)(lambda params, previous, context: None)
    response = admin_client.get("/api/step-types/my_shop.price_v2/")
    assert response.status_code == 200 and response.json()["key"] == "my_shop.price_v2"
