"""The queues a step may be sent to: those configured in CHAINS_QUEUES and those registered
step types declare. Never a free string: a queue name reaches the broker as a key."""
from django.conf import settings

from chains.steps import STEP_TYPES


def allowed_queues() -> list[str]:
    declared = {step_type.default_queue for step_type in STEP_TYPES.values()}
    return sorted(set(settings.CHAINS_QUEUES) | declared)


def queue_problem(queue: str) -> str | None:
    """Why a step may not name `queue` ('' means its family's queue), or None."""
    if not queue:
        return None
    allowed = allowed_queues()
    if queue not in allowed:
        return f"unknown queue {queue[:64]!r}; one of {', '.join(allowed)} (CHAINS_QUEUES)"
    return None
