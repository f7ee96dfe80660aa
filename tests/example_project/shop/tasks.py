"""An existing Celery task of the project, made a step type in steps.py."""
from celery import shared_task


@shared_task(name="shop.tasks.invoice")
def invoice(customer: str, lines: list[float], previous=None) -> dict:
    """Bill a customer for the lines and what the previous step computed."""
    total = sum(lines) + (previous if isinstance(previous, int | float) else 0)
    return {"customer": customer, "total": round(total, 2)}
