"""Scale-out across a network: Redis and two specialised workers, each in a network namespace."""
import hashlib
import os
import random
import secrets
import selectors
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from django_celery_results.models import TaskResult

from chains import services
from chains.canvas import FINISH_TASK
from chains.models import Run, RunStatus, StepRun
from chains.presets import StepSpec
from config.celery import app as celery_app
from config.embedded_redis import redis_server_command
from tests.helpers import write_csv
from tests.services import CeleryProcess, database_url, stop, worker_env

pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]

SUBNET_PREFIX = "10.251"
REDIS_PORT = 6379  # Redis has its namespace to itself, so the standard port is free there
WORKER_QUEUES = {"mathio": "celery,math,io", "data": "data"}


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def ip_output(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def free_subnet() -> str:
    """A 10.251.X subnet that no address or route of this host uses; X is random so that two
    runs side by side pick different ones."""
    used = ip_output("-4", "-o", "addr", "show") + ip_output("-4", "route", "show", "table", "all")
    for x in random.sample(range(1, 255), 254):
        if f"{SUBNET_PREFIX}.{x}." not in used:
            return f"{SUBNET_PREFIX}.{x}"
    raise RuntimeError(f"every {SUBNET_PREFIX}.X/24 subnet is in use")


class Network:
    """A bridge in the host namespace and one network namespace per role, each joined to the
    bridge by a veth pair. It records what it creates, so that destroy() removes exactly that."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = free_subnet()
        self.bridge = f"tcbr{self.tag}"
        self.gateway = f"{self.subnet}.1"
        self.namespaces: dict[str, str] = {}
        self.host_links: list[str] = []

    def create_bridge(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.host_links.append(self.bridge)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_namespace(self, role: str) -> str:
        """A namespace for `role` on the bridge; returns its address."""
        number = len(self.namespaces) + 2
        namespace = f"taskchain-{self.tag}-{role}"
        host_end = f"tcve{self.tag}{number}"
        address = f"{self.subnet}.{number}"
        ip("netns", "add", namespace)
        self.namespaces[role] = namespace
        ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self.host_links.append(host_end)
        ip("link", "set", host_end, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        return address

    def exec_prefix(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[role]]

    def reaches(self, role: str, host: str, port: int) -> bool:
        """Whether a TCP connection from inside the role's namespace to host:port succeeds."""
        probe = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"
        result = subprocess.run([*self.exec_prefix(role), sys.executable, "-c", probe, host,
                                 str(port)], capture_output=True, timeout=30)
        return result.returncode == 0

    def destroy(self) -> None:
        # Deleting a host end removes its pair even if a process still holds the namespace.
        for link in reversed(self.host_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        for namespace in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: TcpRelay = self.server
        try:
            upstream = socket.create_connection(server.target, timeout=10)
        except OSError:
            return
        server.count_connection()
        peers = {self.request: upstream, upstream: self.request}
        with upstream, selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not server.closing.is_set():
                for key, _ in selector.select(timeout=0.2):
                    try:
                        data = key.fileobj.recv(65536)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)
                    except OSError:
                        return


class TcpRelay(socketserver.ThreadingTCPServer):
    """Listens on `listen` and relays each connection to `target` (PostgreSQL, which listens on
    the host's loopback only), in a thread per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        super().__init__(listen, _RelayHandler)
        self.target = target
        self.closing = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class NamespaceWorker(CeleryProcess):
    """`celery -A config worker` (prefork, one process) inside a network namespace, in its own
    process group. `ip netns exec` execs the command, so the PID is the worker's."""

    def __init__(self, prefix: list[str], *, queues: str, hostname: str, env: dict[str, str],
                 log_path: Path) -> None:
        self.hostname = hostname
        super().__init__(
            ["worker", "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "1",
             "--queues", queues, "--hostname", hostname, "--without-mingle", "--without-gossip"],
            env=env, log_path=log_path, prefix=tuple(prefix),
        )


def wait_for_address(host: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def postgres_address() -> tuple[str, int]:
    host = connection.settings_dict["HOST"] or "localhost"
    if host.startswith("/"):
        pytest.skip("the test database is reached by a Unix socket, not TCP")
    return host, int(connection.settings_dict["PORT"] or 5432)


@contextmanager
def publishing_to(broker_url: str) -> Iterator[None]:
    """Make this process publish to `broker_url`. Celery caches its connection and producer
    pools on first use, so those are swapped along with the URL and restored afterwards."""
    amqp = celery_app.amqp
    saved = (settings.CELERY_BROKER_URL, celery_app.conf.broker_url, celery_app._pool,
             amqp._producer_pool)
    settings.CELERY_BROKER_URL = celery_app.conf.broker_url = broker_url
    celery_app._pool = amqp._producer_pool = None
    try:
        yield
    finally:
        for pool in (amqp._producer_pool, celery_app._pool):
            if pool is not None:
                pool.force_close_all(close_pool=False)
        (settings.CELERY_BROKER_URL, celery_app.conf.broker_url, celery_app._pool,
         amqp._producer_pool) = saved


def wait_for_runs(run_ids: list, timeout: float) -> dict:
    """The runs by id, once every one is finished or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        runs = Run.objects.in_bulk(run_ids)
        if all(run.is_finished for run in runs.values()) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def successful_task_workers(*, count: int, timeout: float = 30, **lookup) -> dict[str, str]:
    """task id -> worker hostname of the SUCCESS task results matching `lookup`, once there are
    `count` of them: a worker stores a task's result after sending on the next task, so the
    last ones may land after their run has finished."""
    deadline = time.monotonic() + timeout
    while True:
        rows = dict(TaskResult.objects.filter(status="SUCCESS", **lookup)
                    .values_list("task_id", "worker"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip`")
    if connection.vendor != "postgresql":
        pytest.skip("workers reach the database over the network: needs PostgreSQL")
    net = Network()
    try:
        net.create_bridge()
        yield net
    finally:
        net.destroy()


@pytest.fixture
def namespace_redis(network: Network, tmp_path: Path) -> Iterator[str]:
    """A Redis in a namespace of its own, listening on that namespace's address only; its URL."""
    address = network.add_namespace("redis")
    # The last --bind wins, replacing the loopback address of redis_server_command.
    command = [*redis_server_command(REDIS_PORT, tmp_path), "--bind", address]
    process = subprocess.Popen([*network.exec_prefix("redis"), *command],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_address(address, REDIS_PORT)
        yield f"redis://{address}:{REDIS_PORT}/0"
    finally:
        stop(process)


@pytest.fixture
def database_relay(network: Network) -> Iterator[TcpRelay]:
    """PostgreSQL forwarded onto the bridge's address, the only way the namespaces reach it."""
    relay = TcpRelay((network.gateway, 0), postgres_address())
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def workers(network: Network, namespace_redis: str, database_relay: TcpRelay, tmp_path: Path,
            django_db_setup) -> Iterator[dict[str, NamespaceWorker]]:
    """A math+io worker (with the general queue) and a data worker, each in its own namespace,
    on the namespace Redis and the test database through the relay."""
    host, port = database_relay.server_address
    env = worker_env(
        DATABASE_URL=database_url({**connection.settings_dict, "HOST": host, "PORT": port}),
        REDIS_URL=namespace_redis, CELERY_BROKER_URL=namespace_redis,
    )
    started: dict[str, NamespaceWorker] = {}
    try:
        for role, queues in WORKER_QUEUES.items():
            network.add_namespace(role)
            started[role] = NamespaceWorker(
                network.exec_prefix(role), queues=queues, env=env,
                hostname=f"{role}-{network.tag}@scaleout", log_path=tmp_path / f"{role}.log")
        for worker in started.values():
            worker.wait_ready(90)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def test_workers_in_namespaces_complete_runs_routed_to_their_queues(
    network, namespace_redis, database_relay, workers, data_dir
):
    mathio, data = workers["mathio"], workers["data"]
    postgres_host, postgres_port = postgres_address()
    host_broker = urlsplit(celery_app.conf.broker_url)
    redis = urlsplit(namespace_redis)
    relay_host, relay_port = database_relay.server_address
    # From the workers' namespaces only the bridge exists: the host's PostgreSQL and the test
    # run's own broker are out of reach, so whatever they consume came through the namespace
    # Redis and whatever they write went through the relay.
    for role in WORKER_QUEUES:
        assert not network.reaches(role, postgres_host, postgres_port)
        assert not network.reaches(role, host_broker.hostname, host_broker.port or 6379)
        assert network.reaches(role, relay_host, relay_port)
        assert network.reaches(role, redis.hostname, redis.port)

    csv = "name,score\na,10\nb,20\nc,30\n"
    write_csv(data_dir / "scale" / "scores.csv", csv)
    mixed = services.chain_save(name="across workers", steps=[
        StepSpec("math.multiply", {"numbers": [6, 7]}, stage=0),
        StepSpec("data.analyze", {"path": "scale/scores.csv"}, stage=0),
        StepSpec("io.checksum", {"path": "scale/scores.csv"}, stage=0),
    ])
    with publishing_to(namespace_redis):
        started = [
            services.run_submit_task(task_type="math_chain", config={
                "operation": "add", "numbers": [1, 2, 3], "iterations": 2}),
            services.run_submit_task(task_type="data_chain", config={
                "data_input": "scale/scores.csv", "processing_steps": ["clean", "analyze"]}),
            services.run_submit_task(task_type="io_chain", config={
                "file_operations": ["stat", "checksum"], "target_files": ["scale/scores.csv"]}),
            services.run_start(chain=mixed),
        ]
    run_ids = [run.id for run in started]
    assert all(run.published_at for run in Run.objects.filter(id__in=run_ids))

    runs = wait_for_runs(run_ids, timeout=90)
    logs = f"\n--- mathio:\n{mathio.log_tail()}\n--- data:\n{data.log_tail()}"
    assert [runs[i].status for i in run_ids] == [RunStatus.COMPLETED] * 4, (
        [(runs[i].status, runs[i].error) for i in run_ids], logs)
    math_run, data_run, io_run, mixed_run = (runs[i] for i in run_ids)
    score = {"count": 3, "mean": 20.0, "min": 10.0, "max": 30.0, "std": 10.0}
    checksum = hashlib.sha256(csv.encode()).hexdigest()
    assert math_run.result == 12
    assert data_run.result["rows"] == 3 and data_run.result["columns"]["score"] == score
    assert [r["operation"] for r in io_run.result] == ["stat", "checksum"]
    assert io_run.result[0]["size"] == len(csv) and io_run.result[1]["checksum"] == checksum
    product, analysis, digest = mixed_run.result
    assert product == 42 and analysis["columns"]["score"] == score
    assert digest["checksum"] == checksum

    steps = list(StepRun.objects.filter(run_id__in=run_ids))
    done_by = successful_task_workers(count=len(steps), task_id__in=[s.task_id for s in steps])
    workers_per_queue: dict[str, set[str]] = {}
    for step in steps:
        workers_per_queue.setdefault(step.queue, set()).add(done_by.get(step.task_id))
    assert workers_per_queue == {"math": {mathio.hostname}, "io": {mathio.hostname},
                                 "data": {data.hostname}}, logs
    # The finaliser after the mixed run's parallel stage keeps no task result; logs show who ran it.
    finaliser_received = f"Task {FINISH_TASK}["
    assert finaliser_received in mathio.log_text(), logs
    assert finaliser_received not in data.log_text()
    assert database_relay.connections >= 2  # at least one per worker
