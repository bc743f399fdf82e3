"""Run the README's shell blocks end to end in a fresh clone, with training capped, and report each command.

``tests/test_readme_commands.py`` checks that every documented ``mmrec`` command *parses*; this script *runs*
them: each fenced ``bash`` block of README.md (but the ``make`` set-up block, which CI runs) is executed by
``bash -e`` in a fresh ``git clone`` of the repository (with ``../shared`` linked beside it), in order, so a
block sees what the earlier ones built (``cache/demo``, ``runs/...``). ``mmrec`` resolves to a wrapper that runs
the real command with training capped (epochs and batches), because the documented commands train for
minutes to hours; everything else (configs, data, stores, checkpoints, indexes, serving) is the real path.

Caps appended by the wrapper:

- ``fit`` / ``validate`` / ``test``: ``--trainer.max_epochs 1 --trainer.limit_train_batches 3``;
- ``bench quality``: ``--seeds=[0] --trainer.max_epochs 1``;
- ``bench crossdomain``: ``--transfer.seeds=[0] --pretrain.max_epochs 1 --transfer.max_epochs 1``.

Blocks that read ``../shared/data`` run only with ``--realdata`` (embedding Beauty's titles alone takes 7-17
minutes on one core).

Usage::

    python bench/readme_smoke.py                 # the demo blocks, ~10 min on 2 CPU cores
    python bench/readme_smoke.py --realdata      # and the real-data block

Last line: ``{"commands": N, "passed": P, "failed": [...], "seconds": S}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WRAPPER = r"""#!/usr/bin/env bash
# mmrec with training capped (bench/readme_smoke.py); logs each call and its exit status
real="{real}"
verb="$1"; sub="$2"
extra=()
case "$verb" in
  fit|validate|test) extra=(--trainer.max_epochs 1 --trainer.limit_train_batches 3) ;;
  bench)
    case "$sub" in
      quality) extra=("--seeds=[0]" --trainer.max_epochs 1) ;;
      crossdomain) extra=("--transfer.seeds=[0]" --pretrain.max_epochs 1 --transfer.max_epochs 1) ;;
    esac ;;
esac
start=$(date +%s%N)
"$real" "$@" "${{extra[@]}}"
status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '%s\t%s\t%s\n' "$status" "$elapsed_ms" "mmrec $*" >> "{log}"
exit $status
"""


def shell_blocks(markdown: str) -> list[str]:
    """The fenced ``bash`` blocks of a markdown text, in order."""
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", action="store_true", help="also run blocks that read ../shared/data")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone (its path is printed)")
    args = parser.parse_args(argv)

    real = REPO / ".venv" / "bin" / "mmrec"
    if not real.exists():
        sys.exit(f"{real} is missing: run `make test` or `make demo` once first (they build .venv).")
    scratch = Path(tempfile.mkdtemp(prefix="mmrec-readme-"))
    clone = scratch / "x"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.exists():
        (scratch / "shared").symlink_to(shared)
    bindir = scratch / "bin"
    bindir.mkdir()
    log = scratch / "calls.tsv"
    wrapper = bindir / "mmrec"
    wrapper.write_text(WRAPPER.format(real=real, log=log))
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }

    started = time.time()
    blocks = []
    for i, block in enumerate(shell_blocks((REPO / "README.md").read_text())):
        if re.search(r"^\s*make\b", block, flags=re.M):
            continue  # the set-up commands: CI and the fresh-clone check run them
        if "../shared/data" in block and not args.realdata:
            print(f"[readme-smoke] block {i}: reads ../shared/data, skipped (--realdata runs it)", flush=True)
            continue
        t0 = time.time()
        print(f"[readme-smoke] block {i}:\n{block}", flush=True)
        done = subprocess.run(["bash", "-e", "-c", block], cwd=clone, env=env)
        blocks.append({"block": i, "exit": done.returncode, "seconds": round(time.time() - t0, 1)})
        print(f"[readme-smoke] block {i}: exit {done.returncode} in {time.time() - t0:.0f} s", flush=True)

    calls = [line.split("\t", 2) for line in log.read_text().splitlines()] if log.exists() else []
    print("\n| exit | seconds | command (caps appended) |\n|---:|---:|---|")
    for status, millis, command in calls:
        print(f"| {status} | {int(millis) / 1000:.1f} | `{command}` |")
    failed = [command for status, _, command in calls if status != "0"]
    failed += [f"block {b['block']} (exit {b['exit']})" for b in blocks if b["exit"] != 0 and not failed]
    if args.keep:
        print(f"[readme-smoke] scratch clone kept: {clone}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        json.dumps(
            {
                "commands": len(calls),
                "passed": sum(status == "0" for status, _, _ in calls),
                "failed": failed,
                "blocks": blocks,
                "seconds": round(time.time() - started, 1),
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
