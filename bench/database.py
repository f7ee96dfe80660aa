"""The database a benchmark measures on: by default a fresh SQLite file in its work directory;
with BENCH_DATABASE_URL (postgres://user@host:port/db) a fresh database of its own on that
PostgreSQL server, created here and dropped when the process that created it exits."""
import atexit
import functools
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SERVER_VARIABLE = "BENCH_DATABASE_URL"


def server_url() -> str:
    return os.environ.get(SERVER_VARIABLE, "").strip()


def engine() -> str:
    """'postgresql' or 'sqlite': what the table's title says the figures were measured on."""
    return "postgresql" if server_url() else "sqlite"


@functools.cache
def database_environment(workdir: Path) -> dict[str, str]:
    """DATABASE_URL for a benchmark's processes: unset (SQLite under TASK_CHAIN_VAR_DIR) or a
    fresh PostgreSQL database named after `workdir`, created by the first process that asks."""
    url = server_url()
    if not url:
        return {}
    name = "taskchain_bench_" + re.sub(r"[^a-z0-9_]", "_", Path(workdir).name.lower())
    inherited = os.environ.get("DATABASE_URL", "")
    if urlsplit(inherited).path == "/" + name:  # made by the parent process, which drops it
        return {"DATABASE_URL": inherited}
    _create(url, name)
    atexit.register(_drop, url, name)
    parts = urlsplit(url)
    return {"DATABASE_URL": urlunsplit(parts._replace(path="/" + name))}


def without_database_url(environ: dict[str, str]) -> dict[str, str]:
    """The inherited environment minus any DATABASE_URL: the benchmark chooses its own."""
    return {key: value for key, value in environ.items() if key != "DATABASE_URL"}


def _admin_connection(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _create(url: str, name: str) -> None:
    with _admin_connection(url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def _drop(url: str, name: str) -> None:
    try:
        with _admin_connection(url) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # the figures are already written; say what was left behind
        print(f"could not drop the bench database {name}: {exc}")
