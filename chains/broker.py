"""What the broker holds, read for the reconciler: the task ids of messages waiting in queues
or handed to a consumer and not yet acknowledged. Redis only (RabbitMQ gives a dead
consumer's messages back by itself); None elsewhere or when the broker cannot be read."""
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from celery import current_app as app

logger = logging.getLogger(__name__)


def _task_id(payload: dict) -> str | None:
    headers = payload.get("headers") or {}
    return headers.get("id") or (payload.get("properties") or {}).get("correlation_id")


# Past this many waiting messages a pass of the reconciler would read too much: it then
# recovers only steps whose worker died, and lost messages wait for the stall deadline.
MAX_SCANNED_MESSAGES = 20_000


@dataclass(frozen=True)
class Holdings:
    waiting: set[str]  # in a queue, for any consumer
    taken: dict[str, float]  # handed to a consumer and not acknowledged: seconds since


def holdings(queues: Iterable[str]) -> Holdings | None:
    """The task ids waiting in `queues` (every priority level), and those taken, with how
    long ago (by the broker's clock)."""
    try:
        with app.connection_for_read() as connection:
            if connection.transport.driver_type != "redis":
                return None
            channel = connection.default_channel
            client = channel.client
            keys = [queue if not step else f"{queue}{channel.sep}{step}"
                    for queue in sorted(set(queues)) for step in channel.priority_steps]
            if sum(client.llen(key) for key in keys) > MAX_SCANNED_MESSAGES:
                logger.info("over %d messages waiting: lost messages are not looked for",
                            MAX_SCANNED_MESSAGES)
                return None
            waiting = {_task_id(json.loads(raw))
                       for key in keys for raw in client.lrange(key, 0, -1)}
            seconds, micros = client.time()
            now = seconds + micros / 1e6
            since = dict(client.zrange(channel.unacked_index_key, 0, -1, withscores=True))
            held = {_task_id(json.loads(raw)[0]): now - since.get(tag, now)
                    for tag, raw in client.hgetall(channel.unacked_key).items()}
            return Holdings(waiting={task_id for task_id in waiting if task_id is not None},
                            taken={task_id: age for task_id, age in held.items()
                                   if task_id is not None})
    except Exception:  # the broker is away or holds something unexpected: recover nothing
        logger.warning("could not read the broker's queues", exc_info=True)
        return None
