"""`make verify` (`python -m fmnist_shap.review.verify [--base REV]`): after `dvc repro`, what
reproduced.

For every stage of dvc.lock, one label (`provenance`): changed (its code, params or data, or an
upstream stage's, differ from REV, default HEAD), rerun here and bit-identical or with other bits
(which files), pulled from the remote, or not rerun (outputs committed or cached). For every
metric that differs: the committed value, this one, and how far retraining with another seed
moves it (`reports/calibration.json`, measured by `make calibrate`), so a last-bit difference
reads as what it is. And the cause's usual suspects: the versions and settings each stage
recorded against this machine's, where each stage ran, and the training fingerprint of both.

`--check` (publish.yml's guard): exit 1 with one line when an output that no change of code,
params or data explains differs from REV's — what this command compares, nothing else.

Prints markdown; without --check it exits 0 whatever differs (it reports, it does not judge).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fmnist_shap.environment import describe, machine
from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.remote import DVC, require_sound_cache
from fmnist_shap.review.changes import Side
from fmnist_shap.review.provenance import VARYING, StageResult, machine_text, stage_results

CALIBRATION = "reports/calibration.json"
ENVIRONMENTS = {
    "train": "reports/train/environment.json",
    "evaluate": "reports/eval/environment.json",
    "explain": "reports/explain/environment.json",
    "export": "reports/export/environment.json",
    "global": "reports/global/environment.json",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def read_at(repo: Path, rev: str, path: str) -> str | None:
    """A file's text at `rev`, or None when it is not there (the PR report's `Side.read`)."""
    data = Side(repo, rev).read(path)
    return None if data is None else data.decode("utf-8")


def metric_changes(repo: Path, base: str, calibration: dict[str, float]) -> pd.DataFrame:
    """Every metric whose value differs from `base`, beside its seed calibration."""
    done = subprocess.run(
        [*DVC, "metrics", "diff", base, "--json"], cwd=repo, capture_output=True, text=True
    )
    if done.returncode != 0 or "failed to load" in done.stderr:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"dvc metrics diff {base}: {first}")
    diff = json.loads(done.stdout or "{}")
    rows = []
    for file, metrics in diff.items():
        if file.endswith(VARYING):
            continue
        for key, change in metrics.items():
            old, new = change.get("old"), change.get("new")
            if old == new or not all(isinstance(v, int | float) for v in (old, new)):
                continue
            rows.append(
                {
                    "metric": f"{file}:{key}",
                    "committed": old,
                    "now": new,
                    "difference": new - old,
                    "another training seed moves it by": calibration.get(f"{file}:{key}"),
                }
            )
    return pd.DataFrame(rows)


def environment_changes(repo: Path, base: str) -> pd.DataFrame:
    """Fields of each stage's recorded environment (what decides the bits): committed vs here."""
    here = describe()
    rows = []
    for stage, path in ENVIRONMENTS.items():
        text = read_at(repo, base, path)
        recorded = json.loads(text) if text else {}
        for key in sorted(set(here) | set(recorded)):
            if key == "training_fingerprint" or recorded.get(key) == here.get(key):
                continue
            rows.append(
                {
                    "stage": stage,
                    "field": key,
                    "committed": recorded.get(key),
                    "here": here.get(key),
                }
            )
    return pd.DataFrame(rows)


def _stage_table(results: list[StageResult], base: str) -> str:
    rows = [{"stage": r.stage, "outputs": r.label, "because": r.detail(base)} for r in results]
    return pd.DataFrame(rows).to_markdown(index=False)


def unexplained(results: list[StageResult]) -> list[StageResult]:
    """Stages whose outputs differ from the base though no change of code, params or data
    reaches them: what publish.yml refuses to push."""
    return [r for r in results if r.differing and r.changed is None]


def _require_up_to_date(repo: Path) -> None:
    require_sound_cache(repo)  # before `dvc status`, which drops a damaged object silently
    stale = subprocess.run([*DVC, "status", "-q"], cwd=repo, capture_output=True)
    if stale.returncode != 0:
        raise UserError("the workspace has stale stages (`dvc status`); run `dvc repro` first")


def report(repo: Path, base: str, fingerprint: str) -> str:
    """The markdown `make verify` prints."""
    _require_up_to_date(repo)
    calibration_text = read_at(repo, base, CALIBRATION)
    calibration = json.loads(calibration_text) if calibration_text else {}
    results = stage_results(repo, base)
    lines = [f"# What reproduced: workspace vs `{base}`", ""]
    lines += [_stage_table(results, base), ""]
    for result in results:
        for path, files in result.differing.items():
            shown = ", ".join(files[:8]) + (f" … ({len(files)} files)" if len(files) > 8 else "")
            lines.append(f"- `{path}` differs" + (f": {shown}" if files else ""))
    metrics = metric_changes(repo, base, calibration.get("metrics", {}))
    lines += ["", "## Metrics that differ", ""]
    if metrics.empty:
        lines.append("none")
    else:
        lines.append(metrics.to_markdown(index=False, floatfmt=".6g"))
        if calibration:
            lines.append(
                f"\nCalibration: {calibration['change']}, measured on {calibration['commit']}."
            )
    recorded = json.loads(read_at(repo, base, ENVIRONMENTS["train"]) or "{}")
    reference = recorded.get("training_fingerprint", "not recorded")
    same = "same as" if reference == fingerprint else "DIFFERENT from"
    lines += [
        "",
        "## This machine",
        "",
        "Training fingerprint (md5 of the weights after four training steps on fixed synthetic "
        f"images) here {fingerprint}, {same} the committed one ({reference}): "
        + (
            "this machine computes those steps bit for bit as the committed run did."
            if reference == fingerprint
            else "this machine computes other bits for them, so retraining here will give "
            "other weights; pull the outputs from the remote instead."
        ),
        "",
    ]
    environment, here = environment_changes(repo, base), machine()
    lines.append(
        f"This machine: {machine_text(here)}, Python {here['python']}. Versions and "
        "settings each stage recorded (what decides the bits) vs here: "
        + ("the same." if environment.empty else "\n\n" + environment.to_markdown(index=False))
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="the revision whose dvc.lock to compare")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 with one line when outputs differ that no change explains (publish's guard)",
    )
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    git(repo, "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    if args.check:
        check(repo, args.base)
        return
    from fmnist_shap.train import training_fingerprint

    sys.stdout.write(report(repo, args.base, training_fingerprint()))


def check(repo: Path, base: str) -> None:
    """One line: the outputs equal `base`'s where nothing changed, or which differ (exit 1)."""
    _require_up_to_date(repo)
    results = stage_results(repo, base)
    bad = unexplained(results)
    if bad:
        where = "; ".join(f"{r.stage}: {', '.join(r.differing)}" for r in bad)
        print(
            f"verify: outputs differ from {base}'s dvc.lock with no change of code, params or "
            f"data ({where}); `make verify` says where",
            file=sys.stderr,
        )
        raise SystemExit(1)
    compared = sum(r.total for r in results)
    print(
        f"verify: all {compared} outputs are bit-identical to {base}'s dvc.lock "
        f"(not compared: {', '.join(f'*{v}' for v in VARYING)})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_cli(main)
