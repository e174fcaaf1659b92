"""Run every benchmark: each `bench/<name>.py` that defines `main()`, in name order.

New scripts are picked up by themselves; modules whose name starts with `_` are helpers.
`python -m bench reset charge` runs only the named ones.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(here)])
        if not info.name.startswith("_") and not info.ispkg
    )


def main(argv: list[str]) -> int:
    names = argv or discover()
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        # STANDALONE scripts (the minutes-long soak) run only when named.
        if entry is None or (not argv and getattr(module, "STANDALONE", False)):
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.perf_counter()
        try:
            entry()
        except Exception:  # report and go on: one broken bench must not hide the others
            traceback.print_exc()
            failed.append(name)
        print(f"(bench.{name} took {time.perf_counter() - started:.1f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
