"""Run the benchmark suite: `python -m bench.run [--only NAME] [--quick] [--out DIR]`.

Needs RabbitMQ (AMQP_URL, default: a dedicated vhost on the local broker); starts
the mock provider and worker processes itself. Prints tables, writes
`<out>/<name>.json` and `<out>/<name>.png`. No timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from bench import report
from bench.harness import BenchContext, bench_amqp_url, make_logdir

# Order matters only for wall time: memory (the 5-minute churn) goes last.
SUITE = ("latency", "cpu", "capacity", "embeddings", "audit", "tracing", "backfill", "memory")
# Opt-in: needs py-spy and attaches to the worker (its sampling disturbs figures).
EXTRA = ("profile",)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


async def _main(args: argparse.Namespace) -> int:
    names = args.only or list(SUITE)
    logdir = make_logdir()
    ctx = BenchContext(out=args.out, quick=args.quick, amqp_url=bench_amqp_url(), logdir=logdir)
    ctx.machine = await report.machine(ctx.amqp_url)
    print(f"llm-fleet benchmarks ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    print(f"broker {ctx.amqp_url}  results {ctx.out}  process logs {logdir}")
    started = time.perf_counter()
    took: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        await _module(name).run(ctx)
        took[name] = time.perf_counter() - t0
    total = time.perf_counter() - started
    report.print_table("Wall time (s)", ["benchmark", "seconds"], [*took.items(), ("total", total)])
    return 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "--only",
        action="append",
        choices=[*SUITE, *EXTRA],
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join([*SUITE, *EXTRA])}",
    )
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run of each benchmark")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(_main(args))
    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
