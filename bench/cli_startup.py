"""How long ``mmrec <command> --help`` takes, per command, in fresh processes.

Each command runs ``--repeats`` times in a new Python process; the table gives the best wall-clock time,
the CPU time of that run (user + system: on a shared machine wall time also counts waiting for a core) and
whether torch was imported. The LightningCLI verbs are measured twice: the first run builds Lightning's help
(which imports Lightning) and caches it, later runs read the cache; the cold figure comes from a run with an
empty cache folder.

Usage::

    python bench/cli_startup.py [--repeats 3] [--commands "fit" "data prepare"]

Last line: ``{"seconds": {"<command>": best wall s, ...}, "cpu_seconds": {...}, "max_seconds": ...,
"target_seconds": 3.0, "load_average": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

COMMANDS = (
    "",
    "data",
    "data prepare",
    "data prepare movielens/100k",
    "data synth",
    "data info",
    "embed",
    "shard",
    "export",
    "store",
    "store info",
    "encoders",
    "encoders list",
    "index",
    "recommend",
    "bench",
    "bench crossdomain",
    "fit",
    "validate",
    "test",
    "predict",
)
LIGHTNING = ("fit", "validate", "test", "predict")
TARGET_SECONDS = 3.0

PROBE = """
import sys, io, contextlib
from mmrec.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print("TORCH" if "torch" in sys.modules else "NOTORCH", code, file=sys.stderr)
"""


def run_once(command: str, env: dict[str, str]) -> tuple[float, float, bool]:
    """Wall seconds, CPU seconds and whether torch was imported, for one ``mmrec <command> --help``."""
    args = [*command.split(), "--help"] if command else ["--help"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    status = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    if not status.endswith(" 0"):
        raise RuntimeError(f"mmrec {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return wall, cpu, status.startswith("TORCH")


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--commands", nargs="+", default=list(COMMANDS))
    a = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env["XDG_CACHE_HOME"] = cache  # an empty help cache: the first Lightning run is cold
        print(f"{'command':<32} {'wall s':>7} {'cpu s':>7}  torch")
        for command in a.commands:
            runs = []
            names = [command]
            if command in LIGHTNING:
                runs.append(run_once(command, env))  # cold: builds and caches Lightning's help
                seconds[f"{command} (first run)"] = round(runs[0][0], 3)
                cpu_seconds[f"{command} (first run)"] = round(runs[0][1], 3)
                print(f"{'mmrec ' + command + ' --help (first)':<32} {runs[0][0]:7.2f} {runs[0][1]:7.2f}  {runs[0][2]}")
                runs = []
                names = [f"{command} (cached)"]
            runs += [run_once(command, env) for _ in range(a.repeats)]
            best = min(runs)
            label = names[0] or "(none)"
            seconds[label] = round(best[0], 3)
            cpu_seconds[label] = round(best[1], 3)
            shown = "mmrec " + (command + " --help" if command else "--help")
            suffix = " (cached)" if command in LIGHTNING else ""
            print(f"{shown + suffix:<32} {best[0]:7.2f} {best[1]:7.2f}  {best[2]}")
    steady = {k: v for k, v in seconds.items() if "first run" not in k}
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "max_seconds": max(steady.values()),
        "target_seconds": TARGET_SECONDS,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
