"""`chatllm --version` and `--help` wall time of this tree against an earlier revision, alternating run by run.

    python bench/startup_compare.py --before REV [--runs 21]

REV is checked out into a temporary git worktree; both trees run as `python -m chatllm` from their own folder, so
each imports its own code with the same interpreter and packages.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cwd: Path, args: list[str]) -> float:
    """Seconds for one `python -m chatllm ARGS` run in cwd."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "chatllm", *args], cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    """Print best and median wall times of both trees for --version and --help."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the git revision to compare with")
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.before], check=True)
        try:
            for flags in (["--version"], ["--help"]):
                before, after = [], []
                for _ in range(args.runs):
                    before.append(wall(old, flags))
                    after.append(wall(ROOT, flags))
                print(f"{' '.join(flags):10s} before best {min(before):.3f} s, median {statistics.median(before):.3f} s | "
                      f"after best {min(after):.3f} s, median {statistics.median(after):.3f} s")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
