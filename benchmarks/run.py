"""``make bench``: run every benchmark module, print ``BENCH <name> <value> target <op> <value> PASS|MISS`` lines
and write BENCHMARKS-latest.json (BENCHMARKS.md is written by hand from it, with the machine and versions).

A benchmark module is ``benchmarks/bench_*.py`` with ``run() -> list[dict]``; each dict has
``name``, ``value``, ``op`` (">=" or "<="), ``target`` and optionally ``detail`` (free text). A row without a
target is a plain measurement, printed as ``INFO <name> <value>``. The exit status is 1 when any target is missed,
so ``make bench`` fails then.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def verdict(value: float, op: str, target: float) -> str:
    ok = value >= target if op == ">=" else value <= target
    return "PASS" if ok else "MISS"


def main(argv: list[str]) -> int:
    only = set(argv)
    modules = sorted(HERE.glob("bench_*.py"))
    results = []
    for path in modules:
        if only and path.stem not in only and path.stem.removeprefix("bench_") not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        start = time.perf_counter()
        print(f"== {path.stem}", flush=True)
        for row in module.run():
            row["verdict"] = verdict(row["value"], row["op"], row["target"]) if "target" in row else None
            row["module"] = path.stem
            results.append(row)
            print(f"   {row['name']}: {row['value']:.3g} ({row.get('detail', '')})", flush=True)
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    import torch

    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    (HERE.parent / "BENCHMARKS-latest.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    for row in results:
        if row["verdict"] is None:
            print(f"INFO {row['name']} {row['value']:.3g}")
        else:
            print(f"BENCH {row['name']} {row['value']:.3g} target {row['op']} {row['target']:g} {row['verdict']}")
    missed = [row["name"] for row in results if row["verdict"] == "MISS"]
    targets = sum(row["verdict"] is not None for row in results)
    print(f"{targets - len(missed)}/{targets} targets PASS" + (f"; MISS: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
