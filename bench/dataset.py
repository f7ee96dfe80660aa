"""Fills a migrated database with runs, step runs and task results at benchmark size."""
import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.database import database_environment, without_database_url

ROOT = Path(__file__).resolve().parent.parent
STEPS_PER_RUN = 10
BATCH_RUNS = 5_000
SPREAD = timedelta(weeks=6)
# Status mix of a database that has been in use for weeks.
RUN_STATUSES = [("COMPLETED", 0.72), ("FAILED", 0.14), ("CANCELLED", 0.06),
                ("RUNNING", 0.03), ("PENDING", 0.05)]
FINISHED_STATUSES = [("COMPLETED", 0.78), ("FAILED", 0.15), ("CANCELLED", 0.07)]
STEP_TYPES = ["math.add", "math.multiply", "data.load_csv", "data.filter", "io.copy",
              "flow.wait"]
TASK_TYPES = ["math_chain", "data_chain", "io_chain"]
USERS = [("bench-admin", True), ("alice", False), ("bob", False)]


def bench_environment(workdir: Path) -> dict[str, str]:
    """Environment of a process that uses a fresh SQLite database under `workdir`."""
    return {**without_database_url(os.environ), **database_environment(workdir),
            "TASK_CHAIN_VAR_DIR": str(workdir), "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_LOG_LEVEL": "WARNING"}


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                   check=True)


def setup_django(workdir: Path) -> None:
    """Point this process at `workdir`, migrate it and set Django up (once per process)."""
    env = bench_environment(workdir)
    os.environ.update(env)
    migrate(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


class Columns:
    """A model's concrete columns, in order, with constant database values for the columns a
    generator leaves out (their model defaults), so new fields need no change here."""

    def __init__(self, model, given: set[str]) -> None:
        from django.db import connection, models

        # Auto-incremented keys are left to the database.
        fields = [f for f in model._meta.concrete_fields
                  if not isinstance(f, models.fields.AutoFieldMixin)]
        self.table = model._meta.db_table
        self.names = [f.column for f in fields]
        self.constants = {
            f.column: f.get_db_prep_save(f.get_default(), connection)
            for f in fields if f.column not in given
        }
        unknown = given - set(self.names)
        if unknown:
            raise RuntimeError(f"{self.table} has no column(s) {sorted(unknown)}")

    def row(self, values: dict) -> tuple:
        return tuple(values[name] if name in values else self.constants[name]
                     for name in self.names)

    def insert_sql(self) -> str:
        from django.db import connection

        quote = connection.ops.quote_name
        return (f"INSERT INTO {quote(self.table)} ({', '.join(map(quote, self.names))}) "
                f"VALUES ({', '.join(['%s'] * len(self.names))})")


def _db_time(moment: datetime) -> str:
    # Moments here are naive UTC, which is how Django stores aware datetimes in SQLite.
    return str(moment)


def _pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


class Generator:
    """Rows of runs, their step runs and the TaskResults of the steps that ran."""

    RUN_GIVEN = {"id", "chain_id", "task_type", "description", "status", "trigger", "inputs",
                 "result", "error", "steps_total", "steps_done", "created_by_id", "created_at",
                 "started_at", "finished_at", "published_at", "last_progress_at"}
    STEP_GIVEN = {"run_id", "index", "stage", "name", "step_type", "params", "queue", "task_id",
                  "status", "result", "error", "attempts", "started_at", "finished_at"}
    RESULT_GIVEN = {"task_id", "task_name", "task_args", "task_kwargs", "status", "worker",
                    "content_type", "content_encoding", "result", "date_created",
                    "date_started", "date_done", "traceback", "meta"}

    def __init__(self, *, chains: list[int], users: list[int], total: int, seed: int = 7,
                 finished_only: bool = False, status: str | None = None,
                 now: datetime | None = None) -> None:
        from django_celery_results.models import TaskResult

        from chains.models import Run, StepRun

        self.rng = random.Random(seed)
        # Runs are inserted oldest first, as a live table grows: row order follows
        # created_at, which decides how local a purge of the oldest runs is.
        self.step_back = SPREAD / max(total, 1)
        self.created = None
        self.chains, self.users = chains, users
        self.statuses = ([(status, 1.0)] if status
                         else FINISHED_STATUSES if finished_only else RUN_STATUSES)
        self.now = (now or datetime.now(UTC)).astimezone(UTC).replace(
            tzinfo=None) - timedelta(minutes=5)
        self.created = self.now - SPREAD
        self.run_columns = Columns(Run, self.RUN_GIVEN)
        self.step_columns = Columns(StepRun, self.STEP_GIVEN)
        self.result_columns = Columns(TaskResult, self.RESULT_GIVEN)
        self.run_pk = Run._meta.pk

    def batch(self, count: int, steps: int) -> tuple[list[tuple], list[tuple], list[tuple],
                                                      list[str]]:
        from django.db import connection

        runs, step_rows, results, run_ids = [], [], [], []
        for _ in range(count):
            run_id = uuid.UUID(int=self.rng.getrandbits(128), version=4)
            db_id = self.run_pk.get_db_prep_value(run_id, connection)
            run, steps_of_run, results_of_run = self._run(db_id, str(run_id), steps)
            runs.append(run)
            step_rows.extend(steps_of_run)
            results.extend(results_of_run)
            run_ids.append(str(run_id))
        return runs, step_rows, results, run_ids

    def _run(self, db_id: str, run_id: str, steps: int) -> tuple[tuple, list, list]:
        rng = self.rng
        status = _pick(rng, self.statuses)
        self.created += self.step_back * rng.uniform(0.5, 1.5)
        created = min(self.created, self.now)
        started = created + timedelta(seconds=rng.uniform(0.01, 2))
        done, step_statuses = self._step_statuses(status, steps)
        finished = (started + timedelta(seconds=rng.uniform(0.5, 60))
                    if status in ("COMPLETED", "FAILED", "CANCELLED") else None)
        chain = rng.choice(self.chains) if rng.random() < 0.7 else None
        failed = status == "FAILED"
        run = self.run_columns.row({
            "id": db_id, "chain_id": chain,
            "task_type": "" if chain else rng.choice(TASK_TYPES),
            "description": "benchmark run", "status": status,
            "trigger": rng.choice(["api", "admin", "schedule", "command"]),
            "inputs": json.dumps({"numbers": [1, 2, 3]}),
            "result": json.dumps(done * 3) if status == "COMPLETED" else None,
            "error": f"step {done + 1} failed: division by zero" if failed else "",
            "steps_total": steps, "steps_done": done,
            "created_by_id": rng.choice(self.users), "created_at": _db_time(created),
            "started_at": None if status == "PENDING" else _db_time(started),
            "finished_at": _db_time(finished) if finished else None,
            "published_at": _db_time(created),
            "last_progress_at": None if status == "PENDING" else _db_time(finished or started),
        })
        times = (_db_time(started), _db_time(started + timedelta(milliseconds=40)))
        step_rows, results = [], []
        for index, step_status in enumerate(step_statuses):
            task_id = f"{run_id}-{index:04d}"
            step_rows.append(self._step(db_id, index, task_id, step_status, times))
            if step_status in ("COMPLETED", "FAILED", "RUNNING"):
                results.append(self._result(task_id, step_status, times))
        return run, step_rows, results

    def _step_statuses(self, status: str, steps: int) -> tuple[int, list[str]]:
        """Steps done and each step's status for a run ending in `status`."""
        if status == "COMPLETED":
            return steps, ["COMPLETED"] * steps
        if status == "PENDING":
            return 0, ["PENDING"] * steps
        done = self.rng.randrange(steps)
        tail = {"FAILED": "FAILED", "RUNNING": "RUNNING", "CANCELLED": "CANCELLED"}[status]
        rest = "CANCELLED" if status == "CANCELLED" else "PENDING"
        return done, ["COMPLETED"] * done + [tail] + [rest] * (steps - done - 1)

    def _step(self, run_id: str, index: int, task_id: str, status: str,
              times: tuple[str, str]) -> tuple:
        step_type = STEP_TYPES[index % len(STEP_TYPES)]
        ran = status in ("COMPLETED", "FAILED")
        return self.step_columns.row({
            "run_id": run_id, "index": index, "stage": index, "name": f"step {index + 1}",
            "step_type": step_type, "params": f'{{"value": {index}}}',
            "queue": step_type.split(".")[0], "task_id": task_id, "status": status,
            "result": str(index) if status == "COMPLETED" else None,
            "error": "division by zero" if status == "FAILED" else "",
            "attempts": 1 if status != "PENDING" else 0,
            "started_at": times[0] if status != "PENDING" else None,
            "finished_at": times[1] if ran else None,
        })

    def _result(self, task_id: str, status: str, times: tuple[str, str]) -> tuple:
        state = {"COMPLETED": "SUCCESS", "FAILED": "FAILURE", "RUNNING": "STARTED"}[status]
        return self.result_columns.row({
            "task_id": task_id, "task_name": "chains.run_step", "task_args": "[]",
            "task_kwargs": "{}", "status": state, "worker": "celery@bench-1",
            "content_type": "application/json", "content_encoding": "utf-8",
            "result": "3" if state == "SUCCESS" else None,
            "date_created": times[0], "date_started": times[0],
            "date_done": times[1],
            "traceback": "Traceback (most recent call last):\nZeroDivisionError"
            if state == "FAILURE" else None,
            "meta": '{"children": []}',
        })


def base_objects(*, chains: int = 6) -> tuple[list[int], list[int]]:
    """The users (one staff superuser, the others not staff) and chains runs refer to."""
    from django.contrib.auth import get_user_model

    from chains.models import Chain, Step

    users = []
    for name, staff in USERS:
        user, _ = get_user_model().objects.get_or_create(
            username=name, defaults={"is_staff": staff, "is_superuser": staff})
        users.append(user.pk)
    chain_ids = []
    for n in range(chains):
        chain, created = Chain.objects.get_or_create(name=f"bench chain {n + 1}")
        if created:
            Step.objects.bulk_create(Step(chain=chain, position=i, stage=i,
                                          step_type="flow.wait", params={"seconds": 0})
                                     for i in range(STEPS_PER_RUN))
        chain_ids.append(chain.pk)
    return chain_ids, users


def _batches(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def fill(*, runs: int, steps: int = STEPS_PER_RUN, finished_only: bool = False,
         status: str | None = None, seed: int = 7, rebuild_indexes: bool = True,
         progress: bool = False) -> list[str]:
    """Insert `runs` runs of `steps` steps each (with TaskResults for the steps that ran),
    in big transactions; returns the ids of the runs inserted. Give each call on one
    database its own `seed`."""
    from django.db import connection, transaction

    chains, users = base_objects()
    generator = Generator(chains=chains, users=users, total=runs, seed=seed,
                          finished_only=finished_only, status=status)
    sql = [generator.run_columns.insert_sql(), generator.step_columns.insert_sql(),
           generator.result_columns.insert_sql()]
    tables = [c.table for c in (generator.run_columns, generator.step_columns,
                                generator.result_columns)]
    run_ids: list[str] = []
    started = time.perf_counter()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -400000")  # 400 MB: indexes stay in memory
            cursor.execute("PRAGMA synchronous = OFF")  # rebuilt for each benchmark
    with _indexes_built_after(tables if rebuild_indexes else []):
        for count in _batches(runs, BATCH_RUNS):
            rows = generator.batch(count, steps)
            with transaction.atomic(), connection.cursor() as cursor:
                for statement, batch in zip(sql, rows[:3], strict=True):
                    cursor.executemany(statement, batch)
            run_ids.extend(rows[3])
            if progress:
                print(f"\r{len(run_ids)} runs, {time.perf_counter() - started:.1f} s",
                      end="", file=sys.stderr)
    if progress:
        print(f"\nindexed, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return run_ids


# --- Filled by the database itself -------------------------------------------------------------

# Odd multipliers of the integer hash that draws each of a run's choices from its number.
_DRAWS = {"status": 2654435761, "created": 2246822519, "started": 3266489917,
          "finished": 668265263, "done": 374761393, "has_chain": 3046817407,
          "chain": 2028178513, "trigger": 1181783497, "user": 1597334677, "id_a": 3812015801,
          "id_b": 2869860233}


class _Sql:
    """The few expressions SQLite and PostgreSQL spell differently."""

    def __init__(self, connection) -> None:
        self.postgres = connection.vendor == "postgresql"
        self.connection = connection

    def numbers(self, name: str, first: int, count: int) -> str:
        """A CTE `name(n)` of the integers first .. first + count - 1."""
        if self.postgres:
            return (f"{name}(n) AS (SELECT generate_series({first}::bigint, "
                    f"{first + count - 1}::bigint))")
        return (f"{name}(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM {name} "
                f"WHERE n < {first + count - 1})")

    def materialized(self) -> str:
        return "MATERIALIZED "

    def recursive(self) -> str:
        return "WITH RECURSIVE " if not self.postgres else "WITH "

    def hex(self, expression: str, width: int) -> str:
        if self.postgres:
            return f"lpad(to_hex({expression}), {width}, '0')"
        return f"printf('%%0{width}x', {expression})"

    def moment(self, seconds: str) -> str:
        """A timestamp from seconds since the epoch (naive UTC text on SQLite, as Django
        stores aware datetimes there)."""
        if self.postgres:
            return f"to_timestamp({seconds})"
        return f"(strftime('%%Y-%%m-%%d %%H:%%M:%%f', {seconds}, 'unixepoch') || '000')"

    def cast(self, expression: str, field) -> str:
        """On PostgreSQL each value of the SELECT gets its column's type (parameters and
        literals are otherwise untyped text)."""
        if not self.postgres:
            return expression
        return f"CAST({expression} AS {field.db_type(self.connection)})"

    def text(self, expression: str) -> str:
        return f"CAST({expression} AS text)" if self.postgres else f"({expression})"


def _choice(number: str, values: list) -> str:
    """One of `values` picked by the integer expression `number`."""
    cases = " ".join(f"WHEN {i} THEN {_literal(v)}" for i, v in enumerate(values))
    return f"(CASE ({number}) %% {len(values)} {cases} END)"


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _weighted(number: str, weighted: list[tuple[str, float]]) -> str:
    """A status picked by `number` (0..999) with the weights of `weighted`."""
    if len(weighted) == 1:
        return _literal(weighted[0][0])
    cases, bound = [], 0.0
    for value, weight in weighted[:-1]:
        bound += weight * 1000
        cases.append(f"WHEN {number} < {round(bound)} THEN {_literal(value)}")
    return f"(CASE {' '.join(cases)} ELSE {_literal(weighted[-1][0])} END)"


class SqlFill:
    """INSERT ... SELECT statements that make runs, their step runs and the TaskResults of
    the steps that ran inside the database, from a series of numbers: a run's every choice
    (status, times, chain, owner, id) is an integer hash of its number and the seed, so the
    step and result statements compute the same run again instead of reading it back. About
    a hundred times the rows per second of inserting from Python."""

    def __init__(self, *, chains: list[int], users: list[int], total: int, steps: int,
                 seed: int, statuses: list[tuple[str, float]], now: datetime) -> None:
        from django.db import connection
        from django_celery_results.models import TaskResult

        from chains.models import Run, StepRun

        self.sql = _Sql(connection)
        self.chains, self.users, self.steps, self.seed = chains, users, steps, seed
        self.statuses = statuses
        end = now.timestamp() - 300
        self.start, self.spacing = end - SPREAD.total_seconds(), SPREAD.total_seconds() / total
        self.models = {"run": (Run, Columns(Run, Generator.RUN_GIVEN)),
                       "step": (StepRun, Columns(StepRun, Generator.STEP_GIVEN)),
                       "result": (TaskResult, Columns(TaskResult, Generator.RESULT_GIVEN))}

    def _draw(self, name: str, modulo: int) -> str:
        """An integer in 0 .. modulo - 1 drawn from the run number `n` (24 mixed bits of a
        multiplicative hash)."""
        salt = self.seed * 104729 + len(name) * 7919
        return f"((((n + {salt}) * {_DRAWS[name]}) %% 4294967296) / 256) %% {modulo}"

    def _runs_cte(self, first: int, count: int) -> str:
        """CTEs `numbers(n)` and `runs` (one row per run, its columns computed from n)."""
        sql, steps = self.sql, self.steps
        status = _weighted(self._draw("status", 1000), self.statuses)
        created = f"({self.start} + (n + {self._draw('created', 1000)} / 1000.0) * {self.spacing})"
        started = f"({created} + 0.01 + {self._draw('started', 1990)} / 1000.0)"
        finished = f"({started} + 0.5 + {self._draw('finished', 59500)} / 1000.0)"
        run_id = " || ".join([
            sql.hex(self._draw("id_a", 4294967296 // 256), 6),
            sql.hex(self._draw("id_b", 4294967296 // 256), 6),
            sql.hex(str(self.seed % 65536), 4), sql.hex("n", 16)])
        chain = (f"(CASE WHEN {self._draw('has_chain', 10)} < 7 THEN "
                 f"{_choice(self._draw('chain', 65536), self.chains)} END)")
        return (
            f"{sql.recursive()}{sql.numbers('numbers', first, count)}, "
            f"picked AS (SELECT n, {run_id} AS id, {status} AS status, {chain} AS chain_id, "
            f"{created} AS created, {started} AS started, {finished} AS finished, "
            f"{self._draw('done', steps)} AS drawn_done FROM numbers), "
            # Materialized: the step and result statements read each run's row ten times.
            f"runs AS {sql.materialized()}(SELECT picked.*, CASE status WHEN 'COMPLETED' THEN "
            f"{steps} WHEN 'PENDING' THEN 0 ELSE drawn_done END AS done, "
            "status IN ('COMPLETED', 'FAILED', 'CANCELLED') AS final, "
            f"{sql.moment('created')} AS created_at, "
            f"CASE WHEN status <> 'PENDING' THEN {sql.moment('started')} END AS started_at, "
            f"{sql.moment('started + 0.04')} AS step_finished_at, "
            f"{sql.moment('finished')} AS finished_at, {self._task_head()} AS task_head "
            "FROM picked)")

    def _steps_cte(self) -> str:
        """A CTE `steps` of every step of `runs`: its index k, status and task id, and the
        texts that depend on k alone (made once per statement, not per row)."""
        sql = self.sql
        tail = "(CASE WHEN k < done THEN 'COMPLETED' WHEN k = done THEN status " \
               "WHEN status = 'CANCELLED' THEN 'CANCELLED' ELSE 'PENDING' END)"
        texts = (f"SELECT n AS k, 'step ' || {sql.text('n + 1')} AS step_name, "
                 f"{_choice('n', STEP_TYPES)} AS step_type, "
                 f"{_choice('n', [t.split('.')[0] for t in STEP_TYPES])} AS step_queue, "
                 f"'{{\"value\": ' || {sql.text('n')} || '}}' AS step_params, "
                 f"{sql.text('n')} AS step_result, '-' || {sql.hex('n', 12)} AS task_tail "
                 "FROM step_numbers")
        # Runs outer, steps inner (SQLite keeps a CROSS JOIN's order): rows, and their task
        # ids, arrive in ascending order.
        return (f", {sql.numbers('step_numbers', 0, self.steps)}, "
                f"step_texts AS {sql.materialized()}({texts}), "
                "steps AS (SELECT runs.*, step_texts.*, task_head || task_tail AS task_id, "
                "CASE status WHEN 'COMPLETED' THEN 'COMPLETED' WHEN 'PENDING' THEN 'PENDING' "
                f"ELSE {tail} END AS step_status FROM runs CROSS JOIN step_texts)")

    def _task_head(self) -> str:
        """Task ids ascend in insertion order (seed, run number, step): the unique index on
        them is appended to, as it is when runs arrive over time."""
        sql = self.sql
        return " || ".join([sql.hex(str(self.seed % 65536), 8), "'-'",
                            sql.hex("n / 4294967296", 4), "'-'",
                            sql.hex("(n / 65536) %% 65536", 4), "'-'",
                            sql.hex("n %% 65536", 4)])

    def _insert(self, name: str, values: dict[str, str], source: str) -> tuple[str, list]:
        model, columns = self.models[name]
        quote = self.sql.connection.ops.quote_name
        fields = {f.column: f for f in model._meta.concrete_fields}
        selected, params = [], []
        for column in columns.names:
            if column in values:
                selected.append(self.sql.cast(values[column], fields[column]))
            else:
                selected.append(self.sql.cast("%s", fields[column]))
                params.append(columns.constants[column])
        return (f"{source} INSERT INTO {quote(columns.table)} "
                f"({', '.join(map(quote, columns.names))}) SELECT {', '.join(selected)} FROM "
                f"{'runs' if name == 'run' else 'steps'}"
                + (" WHERE step_status IN ('COMPLETED', 'FAILED', 'RUNNING')"
                   if name == "result" else ""), params)

    def statements(self, first: int, count: int) -> list[tuple[str, list]]:
        """The three INSERTs of the runs numbered first .. first + count - 1."""
        sql = self.sql
        runs = self._runs_cte(first, count)
        run = self._insert("run", {
            "id": "id", "chain_id": "chain_id",
            "task_type": f"CASE WHEN chain_id IS NULL THEN "
                         f"{_choice(self._draw('chain', 65536), TASK_TYPES)} "
                         "ELSE '' END",
            "description": "'benchmark run'", "status": "status",
            "trigger": _choice(self._draw("trigger", 65536),
                               ["api", "admin", "schedule", "command"]),
            "inputs": "'{\"numbers\": [1, 2, 3]}'",
            "result": f"CASE WHEN status = 'COMPLETED' THEN {sql.text('done * 3')} END",
            "error": f"CASE WHEN status = 'FAILED' THEN 'step ' || {sql.text('done + 1')} || "
                     "' failed: division by zero' ELSE '' END",
            "steps_total": str(self.steps), "steps_done": "done",
            "created_by_id": _choice(self._draw("user", 65536), self.users),
            "created_at": "created_at", "started_at": "started_at",
            "finished_at": "CASE WHEN final THEN finished_at END",
            "published_at": "created_at",
            "last_progress_at": "CASE WHEN final THEN finished_at ELSE started_at END",
        }, runs)
        steps = runs + self._steps_cte()
        ran = "step_status IN ('COMPLETED', 'FAILED')"
        step = self._insert("step", {
            "run_id": "id", "index": "k", "stage": "k", "name": "step_name",
            "step_type": "step_type", "params": "step_params", "queue": "step_queue",
            "task_id": "task_id", "status": "step_status",
            "result": "CASE WHEN step_status = 'COMPLETED' THEN step_result END",
            "error": "CASE WHEN step_status = 'FAILED' THEN 'division by zero' ELSE '' END",
            "attempts": "CASE WHEN step_status = 'PENDING' THEN 0 ELSE 1 END",
            "started_at": "CASE WHEN step_status <> 'PENDING' THEN started_at END",
            "finished_at": f"CASE WHEN {ran} THEN step_finished_at END",
        }, steps)
        state = ("(CASE step_status WHEN 'COMPLETED' THEN 'SUCCESS' WHEN 'FAILED' THEN "
                 "'FAILURE' ELSE 'STARTED' END)")
        result = self._insert("result", {
            "task_id": "task_id", "task_name": "'chains.run_step'", "task_args": "'[]'",
            "task_kwargs": "'{}'", "status": state, "worker": "'celery@bench-1'",
            "content_type": "'application/json'", "content_encoding": "'utf-8'",
            "result": "CASE WHEN step_status = 'COMPLETED' THEN '3' END",
            "date_created": "started_at", "date_started": "started_at",
            "date_done": "step_finished_at",
            "traceback": "CASE WHEN step_status = 'FAILED' THEN 'Traceback (most recent call "
                         "last):' || char(10) || 'ZeroDivisionError' END"
            if not sql.postgres else "CASE WHEN step_status = 'FAILED' THEN 'Traceback "
            "(most recent call last):' || chr(10) || 'ZeroDivisionError' END",
            "meta": "'{\"children\": []}'",
        }, steps)
        return [run, step, result]


SQL_BATCH_RUNS = 100_000


def fill_fast(*, runs: int, steps: int = STEPS_PER_RUN, finished_only: bool = False,
              status: str | None = None, seed: int = 7, rebuild_indexes: bool = True,
              progress: bool = False) -> dict:
    """`fill`'s runs, step runs and TaskResults (the same mix of statuses, chains, owners and
    times over six weeks), made by the database itself (SqlFill) in transactions of
    SQL_BATCH_RUNS runs, with the tables' indexes dropped and built again at the end (VACUUM
    ANALYZE after on PostgreSQL, as autovacuum would). Returns the seconds it took: inserting and
    indexing. Give each call on one database its own `seed` (it keeps run and task ids
    apart); the seeds of calls on one database ascend."""
    from django.db import connection, transaction

    chains, users = base_objects()
    statuses = ([(status, 1.0)] if status
                else FINISHED_STATUSES if finished_only else RUN_STATUSES)
    filler = SqlFill(chains=chains, users=users, total=runs, steps=steps, seed=seed,
                     statuses=statuses, now=datetime.now(UTC))
    tables = [columns.table for _, columns in filler.models.values()]
    started = time.perf_counter()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -400000")  # 400 MB: indexes stay in memory
            cursor.execute("PRAGMA synchronous = OFF")  # rebuilt for each benchmark
    with _indexes_built_after(tables if rebuild_indexes else []) as timing:
        for first in range(0, runs, SQL_BATCH_RUNS):
            with transaction.atomic(), connection.cursor() as cursor:
                for statement, params in filler.statements(first, min(SQL_BATCH_RUNS,
                                                                       runs - first)):
                    cursor.execute(statement, params)
            if progress:
                print(f"\r{min(runs, first + SQL_BATCH_RUNS)} runs, "
                      f"{time.perf_counter() - started:.1f} s", end="", file=sys.stderr)
        inserted = time.perf_counter() - started
    total = time.perf_counter() - started
    if progress:
        print(f"\nindexed, {total:.1f} s", file=sys.stderr)
    return {"insert_seconds": round(inserted, 1),
            "index_seconds": round(total - inserted, 1), "seconds": round(total, 1),
            **timing}


@contextmanager
def _indexes_built_after(tables: list[str]) -> Iterator[dict]:
    """Drop the tables' separately created indexes and build them again at the end: sorting
    once is several times faster than keeping them up to date row by row. (Unique column
    constraints, and on PostgreSQL every index behind a constraint, stay.) On PostgreSQL the
    tables are vacuumed and analyzed after, as autovacuum would soon. Yields a dict that gets
    the seconds that took (`index_build_seconds`)."""
    from django.db import connection

    timing: dict = {}
    if not tables or connection.vendor not in ("sqlite", "postgresql"):
        yield timing
        return
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({', '.join(['%s'] * len(tables))})", tables)
        else:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = ANY(%s) AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                [tables])
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    try:
        yield timing
    finally:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for _, sql in indexes:
                cursor.execute(sql)
            if connection.vendor == "postgresql":
                # As autovacuum would after so many inserts: statistics for the planner, and
                # the visibility map without which an index-only scan reads the table too.
                for table in tables:
                    cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(table)}")
        timing["index_build_seconds"] = round(time.perf_counter() - started, 1)


def add_run_files(run_ids: list[str]) -> None:
    """A file in the run folder of each of `run_ids`, as file steps leave them."""
    from django.conf import settings

    for run_id in run_ids:
        folder = Path(settings.CHAINS_DATA_DIR) / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "output.csv").write_text("a,b\n1,2\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--var-dir", required=True, help="TASK_CHAIN_VAR_DIR to fill")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=STEPS_PER_RUN)
    parser.add_argument("--finished-only", action="store_true")
    parser.add_argument("--run-files", type=int, default=0,
                        help="runs (of those inserted) that get a folder with a file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    setup_django(Path(args.var_dir))
    started = time.perf_counter()
    run_ids = fill(runs=args.runs, steps=args.steps, finished_only=args.finished_only,
                   progress=not args.quiet)
    spacing = max(1, len(run_ids) // max(1, args.run_files))
    add_run_files(run_ids[::spacing][: args.run_files])
    if not args.quiet:
        print(f"filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
