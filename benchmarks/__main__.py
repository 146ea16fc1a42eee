"""`python -m benchmarks [NAME ...]`: run every `bench_*.py` module (or the named ones).

Each module exposes `main() -> None` and prints its own figures; a ratio against the reference
measured in the same run is what to compare, never an absolute time (machines differ).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    chosen = [n for n in names if not argv or n.removeprefix("bench_") in argv or n in argv]
    if not chosen:
        print(f"no benchmark matches {argv}; available: {', '.join(names) or 'none'}")
        return 1
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name} took {time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
