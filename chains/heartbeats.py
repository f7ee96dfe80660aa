"""Workers say they are alive: each worker process keeps a WorkerHeartbeat row, renewed every
CHAINS_HEARTBEAT_SECONDS by a thread of its own, so that the reconciler can tell a step whose
worker died from a step that is still running (chains.services.recover_orphans)."""
import logging
import os
import threading

from celery import signals
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models.functions import Now
from django.utils import timezone

from chains.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

# The pid of the worker's main process, as its steps record it: this process's own pid, or
# its parent's in a prefork pool child.
_main_pid = os.getpid()
# When this worker started: before any step it runs (the module is imported as the worker
# loads its tasks, before it consumes), so a step that started before it belongs to an
# earlier worker.
_booted_at = timezone.now()
_beat: "Heartbeat | None" = None


def worker_main_pid() -> int:
    return _main_pid


@signals.worker_process_init.connect(dispatch_uid="chains.heartbeats.pool_child")
def _in_pool_child(**kwargs) -> None:
    global _main_pid
    if os.getpid() != _main_pid:  # a forked pool child (the solo pool sends this too, in
        _main_pid = os.getppid()  # the main process itself)


class Heartbeat(threading.Thread):
    def __init__(self, hostname: str) -> None:
        super().__init__(name="task-chain-heartbeat", daemon=True)
        self.hostname, self.pid = hostname[:255], os.getpid()
        self.booted_at = _booted_at
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat()
            except Exception:  # the database is away: the next beat tries again
                logger.warning("worker heartbeat not written", exc_info=True)
            self.stopped.wait(settings.CHAINS_HEARTBEAT_SECONDS)

    def beat(self) -> None:

        try:
            # booted_at is written each time: a worker that restarted with the same host name
            # and pid (pid 1 in a container) replaces its dead predecessor's row. seen_at is
            # the database's clock, which the reconciler compares it with.
            WorkerHeartbeat.objects.update_or_create(
                hostname=self.hostname, pid=self.pid,
                defaults={"booted_at": self.booted_at, "seen_at": Now()})
        finally:
            # No connection stays open in this thread: the pool forks children from this
            # process, and a child must not inherit a socket that is in use here.
            connection.close()

    def stop(self) -> None:

        self.stopped.set()
        self.join(timeout=5)
        try:
            close_old_connections()
            WorkerHeartbeat.objects.filter(hostname=self.hostname, pid=self.pid).delete()
        except Exception:
            logger.warning("worker heartbeat not removed", exc_info=True)


@signals.worker_ready.connect(dispatch_uid="chains.heartbeats.start")
def _start(sender, **kwargs) -> None:
    global _beat
    _beat = Heartbeat(sender.hostname)
    _beat.start()


@signals.worker_shutdown.connect(dispatch_uid="chains.heartbeats.stop")
def _stop(sender, **kwargs) -> None:
    if _beat is not None:
        _beat.stop()
