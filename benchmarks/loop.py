"""The experiment loop's timings, each next to its target, measured in one run in a temporary clone.

    python benchmarks/loop.py            # (or: make bench-loop) about 12 minutes on 2 cores
    python benchmarks/loop.py --rev 001093c --skip-tests   # an older commit, for a before/after

With --stages, each stage is then timed alone (`dvc repro -f -s STAGE`).

Clones the committed HEAD (or --rev) into a temporary folder with this checkout's raw data, then times, in
order: a forced full `dvc repro -f`, a no-op `dvc repro` (best of three), a 1-epoch experiment,
an explain-only experiment, the quick test tier and the whole test suite. Nothing is asserted:
the numbers are printed as measured (a shared machine makes any one of them noisy).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what, command, target seconds)
STEPS = (
    ("dvc repro -f (default params)", ["dvc", "repro", "-f"], 240),
    ("no-op dvc repro", ["dvc", "repro"], 1.0),
    ("dvc exp run -S train.epochs=1", ["dvc", "exp", "run", "-S", "train.epochs=1"], 120),
    ("dvc exp run -S explain.seed=1", ["dvc", "exp", "run", "-S", "explain.seed=1"], 60),
    ("quick tests (make test-fast)", [sys.executable, "-m", "pytest", "-q", "-m", "not slow"], 45),
    ("all tests (make test, tests alone)", [sys.executable, "-m", "pytest", "-q"], 240),
)


def matmul_gflops() -> float:
    """This machine's float32 matmul speed right now (best of a few): how fast it is today."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "bench.py"), "--peak-only"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-2])


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-tests", action="store_true", help="time the pipeline rows only")
    parser.add_argument("--rev", default="HEAD", help="the commit to time (default: HEAD)")
    parser.add_argument(
        "--stages", action="store_true", help="then time each stage alone (dvc repro -f -s)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for key in ("DVC_EXP_NAME", "DVC_ROOT", "GIT_DIR", "GIT_WORK_TREE"):
        env.pop(key, None)
    for who in ("AUTHOR", "COMMITTER"):  # experiments are commits
        env.setdefault(f"GIT_{who}_NAME", "bench")
        env.setdefault(f"GIT_{who}_EMAIL", "bench@example.invalid")
    with tempfile.TemporaryDirectory(prefix="fmnist-shap-loop-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(
            ["git", "-C", str(clone), "checkout", "-q", "-B", "bench-loop", args.rev], check=True
        )
        shutil.copytree(REPO / "data" / "raw", clone / "data" / "raw")
        env["PYTHONPATH"] = str(clone / "src")
        print(
            f"clone of {REPO} at {args.rev}, {os.cpu_count()} cores, matmul "
            f"{matmul_gflops():.0f} GFLOP/s now (a quiet machine of this kind: ~195-207); "
            "seconds measured vs target"
        )
        for what, cmd, target in STEPS:
            if args.skip_tests and "pytest" in cmd:
                continue
            runs = 3 if what.startswith("no-op") else 1
            seconds = min(timed(cmd, clone, env) for _ in range(runs))
            verdict = "met" if seconds <= target else "NOT met"
            print(f"  {what:38s} {seconds:7.1f} s   target {target:>5} s   {verdict}", flush=True)
        if args.stages:  # where a full run's time goes, stage by stage
            for stage in ("prepare", "train", "evaluate", "explain", "summarize"):
                seconds = timed(["dvc", "repro", "-f", "-s", stage], clone, env)
                print(f"  stage {stage:32s} {seconds:7.1f} s", flush=True)
        print(f"matmul {matmul_gflops():.0f} GFLOP/s at the end")


if __name__ == "__main__":
    main()
