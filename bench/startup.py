"""Start-up time of the CLI: wall time of `mastctl --help` (target < 0.25 s).

Prints the median of several runs next to a bare `python -c pass`, so the
number can be read against the interpreter's own start on the same machine.

    python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

TARGET_S = 0.25


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("mastctl")
    cli = [exe] if exe else [sys.executable, "-m", "mastctl"]
    wall(cli + ["--help"], 2)  # warm the file cache
    python = wall([sys.executable, "-c", "pass"], args.runs)
    help_s = wall(cli + ["--help"], args.runs)
    backends_s = wall(cli + ["backends", "list"], args.runs)
    print(f"python -c pass          {python * 1000:7.1f} ms")
    print(f"mastctl --help          {help_s * 1000:7.1f} ms   ({help_s / python:.1f}x the bare interpreter)")
    print(f"mastctl backends list   {backends_s * 1000:7.1f} ms")
    verdict = "meets" if help_s < TARGET_S else "MISSES"
    print(f"target: --help under {TARGET_S * 1000:.0f} ms -> {verdict} it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
