"""`make bench`: every benchmark, each measured against its reference in the same run, printed
as one table of medians and ratios and written as JSON.

    python -m bench.run [--only chains,submit,reads,purge,data,recovery,map,metrics] [--quick]
                        [--repeat 3] [--map-items 10000]

On SQLite by default; with BENCH_DATABASE_URL=postgres://... each benchmark gets a fresh
database of its own on that PostgreSQL server.
"""
import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _chains(args) -> list[dict]:
    from bench import chain_overhead

    return chain_overhead.measure(repeat=1 if args.quick else args.repeat)


def _submit(args) -> list[dict]:
    from bench import submit_api

    return submit_api.measure(duration=5 if args.quick else 20, concurrency=8)


def _reads(args) -> list[dict]:
    from bench import reads

    return reads.measure(quick=args.quick)


def _purge(args) -> list[dict]:
    from bench import purge

    return purge.measure(quick=args.quick)


def _data(args) -> list[dict]:
    from bench import data_analyze

    return data_analyze.measure(quick=args.quick)


def _recovery(args) -> list[dict]:
    from bench import recovery

    return recovery.measure()


def _map(args) -> list[dict]:
    from bench import map_items

    items = args.map_items or (1_000 if args.quick else map_items.ITEMS)
    return map_items.measure(repeat=1 if args.quick else min(args.repeat, map_items.REPEAT),
                             items=items)


def _metrics(args) -> list[dict]:
    from bench import metrics_scrape

    return metrics_scrape.measure(quick=args.quick)


# Suites whose cost does not shrink with --quick: run then only when named with --only.
FIXED_SIZE = {"recovery"}

SUITES: dict[str, Callable] = {
    "chains": _chains, "submit": _submit, "reads": _reads, "purge": _purge, "data": _data,
    "recovery": _recovery, "map": _map, "metrics": _metrics,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None,
                        help=f"comma-separated, of: {', '.join(SUITES)} (default: all; with "
                             "--quick all but recovery, whose kill and restart take as long "
                             "at any size)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and one repeat: a smoke run, not the figures")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--map-items", type=int, default=None,
                        help="items of the map benchmark (default 10,000; 1,000 with --quick)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    if args.only is None:
        chosen = [name for name in SUITES if not (args.quick and name in FIXED_SIZE)]
    else:
        chosen = args.only.split(",")
    names = [name.strip() for name in chosen if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    rows: list[dict] = []
    failed = []
    for name in names:
        started = time.monotonic()
        print(f"--- {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(SUITES[name](args))
        except Exception:  # one broken benchmark still leaves the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if args.quick:  # smaller sizes and one repeat: the goals are for the full run
        for row in rows:
            row["met"] = None
    from bench.database import engine

    print(f"\nmeasured on {engine()}, {time.strftime('%Y-%m-%d')}\n")
    print_table(rows)
    Path(args.json).write_text(json.dumps(
        {"quick": args.quick, "repeat": args.repeat, "database": engine(),
         "date": time.strftime("%Y-%m-%d"), "failed": failed, "results": rows}, indent=2))
    if args.quick:
        print("\n--quick: smaller sizes and one repeat; goals are judged on the full run only")
    print(f"\nwritten to {args.json}")
    if failed:
        sys.exit(f"benchmark(s) failed: {', '.join(failed)}")


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"


def print_table(rows: list[dict]) -> None:
    columns = ["benchmark", "metric", "project", "reference", "ratio", "goal", "met"]
    table = [[row["benchmark"], row["metric"], _number(row["project"]),
              _number(row["reference"]), _number(row["ratio"]), row["goal"],
              {True: "yes", False: "NO", None: "-"}[row["met"]]] for row in rows]
    widths = [max(len(str(cell)) for cell in [name, *(line[i] for line in table)])
              for i, name in enumerate(columns)]
    print("  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for line in table:
        print("  ".join(str(cell).ljust(width) if i < 2 or i > 4 else str(cell).rjust(width)
                        for i, (cell, width) in enumerate(zip(line, widths, strict=True))))
    references = sorted({row["reference_name"] for row in rows if row["reference_name"]})
    if references:
        print("\nreferences: " + "; ".join(references))


if __name__ == "__main__":
    main()
