"""A suite that measures in a child process of its own (its own database and settings):
`measure()` starts `python -m <module> --worker` and reads the rows it prints as JSON."""
import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Rows = list[dict]


def measure_in_child(module: str, *, quick: bool) -> Rows:
    command = [sys.executable, "-m", module, "--worker", *(["--quick"] if quick else [])]
    done = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(doc: str, *, measure: Callable[..., Rows], worker: Callable[..., Rows]) -> None:
    """The command line of such a suite: `--quick` for a tenth of the size; `--worker` is the
    child's side."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="10,000 runs instead of 100,000")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = worker(quick=args.quick) if args.worker else measure(quick=args.quick)
    print(json.dumps(rows) if args.worker else json.dumps(rows, indent=2))
