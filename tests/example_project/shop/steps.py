"""The shop's own step types: one declared with @step (its params have an enum, a nested
model and a list), one made from an existing Celery task with register_task."""
import enum

from pydantic import BaseModel, Field

from chains.steps import StepContext, StepFailed, register_task, step
from tests.example_project.shop.tasks import invoice


class Rounding(enum.Enum):
    UP = "up"
    DOWN = "down"


class Discount(BaseModel):
    percent: float = Field(0, ge=0, le=100, description="Taken off the total.")
    code: str = ""


class PriceParams(BaseModel):
    rounding: Rounding = Rounding.DOWN
    discount: Discount = Discount()
    extras: list[float] = Field(default_factory=list, description="Added before the discount.")


@step("shop.price", params=PriceParams, accepts="numbers", produces="number",
      description="Price the previous amount: extras, a discount, then rounding.")
def price(params: PriceParams, previous, context: StepContext):
    if not isinstance(previous, int | float):
        raise StepFailed(f"needs an amount, got {previous!r}")
    context.progress(0.25, "adding extras")
    total = previous + sum(params.extras)
    context.log.info("extras %s make %s", params.extras, total)
    context.progress(0.75, "discounting")
    total *= 1 - params.discount.percent / 100
    context.log.info("discount %s%% (%s) makes %s", params.discount.percent,
                     params.discount.code or "no code", total)
    return int(total) + (1 if params.rounding is Rounding.UP and total % 1 else 0)


class InvoiceParams(BaseModel):
    customer: str
    lines: list[float] = []


register_task(invoice, key="shop.invoice", params=InvoiceParams)
