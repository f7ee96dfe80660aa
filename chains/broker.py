"""What the broker holds, read for the reconciler: the task ids of messages waiting in queues
or handed to a consumer and not yet acknowledged. Redis only (RabbitMQ gives a dead
consumer's messages back by itself); None elsewhere or when the broker cannot be read."""
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from config.celery import app

logger = logging.getLogger(__name__)


def _task_id(payload: dict) -> str | None:
    headers = payload.get("headers") or {}
    return headers.get("id") or (payload.get("properties") or {}).get("correlation_id")


@dataclass(frozen=True)
class Holdings:
    waiting: set[str]  # in a queue, for any consumer
    taken: set[str]  # handed to a consumer, not acknowledged yet


def holdings(queues: Iterable[str]) -> Holdings | None:
    """The task ids waiting in `queues` (every priority level) and those taken."""
    try:
        with app.connection_for_read() as connection:
            if connection.transport.driver_type != "redis":
                return None
            channel = connection.default_channel
            client = channel.client
            keys = [queue if not step else f"{queue}{channel.sep}{step}"
                    for queue in sorted(set(queues)) for step in channel.priority_steps]
            waiting = {_task_id(json.loads(raw))
                       for key in keys for raw in client.lrange(key, 0, -1)}
            taken = {_task_id(json.loads(raw)[0])
                     for raw in client.hvals(channel.unacked_key)}
            return Holdings(waiting=waiting - {None}, taken=taken - {None})
    except Exception:  # the broker is away or holds something unexpected: recover nothing
        logger.warning("could not read the broker's queues", exc_info=True)
        return None
