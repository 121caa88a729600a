"""`make calibrate`: how far retraining with another seed moves every metric.

Runs the whole pipeline once more as a temporary experiment with `train.seed` + 1
(`dvc exp run --temp`, the workspace is not touched), and writes each metric's absolute change
against HEAD to `reports/calibration.json` (commit it). `make verify` shows it beside every
metric that differs from dvc.lock: a difference far below it is last-bit noise of another
machine, one of its size is as large as a retrain.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from fmnist_shap.artifacts import write_json
from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.remote import DVC
from fmnist_shap.review.provenance import VARYING
from fmnist_shap.review.verify import CALIBRATION

EXPERIMENT = "seed-calibration"


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([*DVC, *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def seed_changes(diff: dict) -> dict[str, float]:
    """`dvc exp diff --json`'s metrics → {"file:key": |new − old|}, numbers only."""
    return {
        f"{file}:{key}": round(abs(change["new"] - change["old"]), 6)
        for file, metrics in diff.get("metrics", {}).items()
        if not file.endswith(VARYING)
        for key, change in metrics.items()
        if all(isinstance(change.get(v), int | float) for v in ("old", "new"))
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    seed = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["train"]["seed"]
    subprocess.run([*DVC, "exp", "remove", EXPERIMENT], cwd=repo, capture_output=True)
    print(f"calibrate: dvc exp run --temp -S train.seed={seed + 1} (the whole pipeline)")
    dvc(repo, "exp", "run", "--temp", "-n", EXPERIMENT, "-S", f"train.seed={seed + 1}")
    diff = json.loads(dvc(repo, "exp", "diff", "HEAD", EXPERIMENT, "--json", "--all") or "{}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    changes = seed_changes(diff)
    write_json(
        repo / CALIBRATION,
        {"change": f"train.seed {seed} → {seed + 1}", "commit": commit, "metrics": changes},
    )
    dvc(repo, "exp", "remove", EXPERIMENT)
    print(f"calibrate: {len(changes)} metrics → {CALIBRATION}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
