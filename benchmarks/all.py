"""Run every benchmark in turn (``python -m benchmarks.all [--quick]``).

Each benchmark prints its own ratios against the baseline it measures in the
same run; this only sequences them and reports each one's wall time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = ("sampling", "fit", "amortized", "valuation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="a subset of the benchmarks")
    args = parser.parse_args(argv)
    status = 0
    for name in args.only or BENCHMARKS:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        code = module.main(["--quick"] if args.quick else [])
        print(f"=== benchmarks.{name}: {time.perf_counter() - start:.0f} s, exit {code} ===", flush=True)
        status = status or (code or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
