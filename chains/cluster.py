"""What the Celery cluster looks like right now: workers, the queues they consume, and how
many messages wait in each queue. Read from Celery's remote control and the broker."""
import logging
from dataclasses import dataclass, field

from celery import current_app as app

from chains.queues import allowed_queues

logger = logging.getLogger(__name__)


@dataclass
class ClusterState:
    workers: dict[str, list[str]] = field(default_factory=dict)  # name -> queues consumed
    active: dict[str, int] = field(default_factory=dict)  # name -> tasks running
    reserved: dict[str, int] = field(default_factory=dict)  # name -> tasks prefetched
    registered: dict[str, list[str]] = field(default_factory=dict)  # name -> chains.* tasks
    queue_lengths: dict[str, int | None] = field(default_factory=dict)
    error: str = ""

    @property
    def worker_rows(self) -> list[tuple[str, list[str], int]]:
        return [(name, queues, self.active.get(name, 0)) for name, queues in self.workers.items()]

    @property
    def consumed_queues(self) -> set[str]:
        return {queue for queues in self.workers.values() for queue in queues}

    def queues_without_workers(self, queues) -> list[str]:
        return sorted(set(queues) - self.consumed_queues)


def cluster_state(*, timeout: float = 1.0, queues=None, detail: bool = False) -> ClusterState:
    """Ask the workers (waiting `timeout` seconds for answers) and the broker, over a
    connection of its own (a pooled one may have died with a broker restart). `queues`
    default to those steps may name; `detail` also asks for reserved and registered tasks."""
    state = ClusterState()
    with app.connection_for_read() as connection:
        try:
            inspect = app.control.inspect(timeout=timeout, connection=connection)
            for name, consumed in (inspect.active_queues() or {}).items():
                state.workers[name] = sorted(q["name"] for q in consumed)
            state.active = {name: len(tasks)
                            for name, tasks in (inspect.active() or {}).items()}
            if detail:
                state.reserved = {name: len(tasks)
                                  for name, tasks in (inspect.reserved() or {}).items()}
                state.registered = {name: sorted(t for t in tasks if t.startswith("chains."))
                                    for name, tasks in (inspect.registered() or {}).items()}
        except Exception as exc:
            logger.warning("workers could not be asked: %s", exc)
            state.error = f"the broker could not be reached: {exc}"
            return state
        try:
            channel = connection.default_channel
            for queue in sorted(set(queues or allowed_queues()) | state.consumed_queues):
                state.queue_lengths[queue] = _queue_length(channel, queue)
        except Exception as exc:
            state.error = f"queue lengths could not be read: {exc}"
    return state


def _queue_length(channel, queue: str) -> int | None:
    """Messages waiting in `queue`: kombu's virtual transports (Redis) count them directly;
    AMQP brokers answer a passive declare. None when the broker does not know the queue."""
    try:
        if hasattr(channel, "_size"):
            return channel._size(queue)
        return channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:
        return None
