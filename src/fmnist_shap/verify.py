"""`make verify` (`python -m fmnist_shap.verify [--base REV]`): after `dvc repro`, what reproduced.

For every output of dvc.lock: bit-identical to the committed one (REV, default HEAD), or not —
and then which files of it differ. For every metric that differs: the committed value, this
one, and how far retraining with another seed moves it (`reports/calibration.json`, measured
by `make calibrate`), so a last-bit difference reads as what it is. And the cause's usual
suspects: this machine's environment against the one each stage recorded when it made the
committed outputs, and the training fingerprint of both (`training_fingerprint`).

Prints markdown; exits 0 whatever differs (it reports, it does not judge).
"""

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fmnist_shap.environment import describe
from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.remote import DVC, read_pull_record
from fmnist_shap.review import Side

CALIBRATION = "reports/calibration.json"
ENVIRONMENTS = {
    "train": "reports/train/environment.json",
    "evaluate": "reports/eval/environment.json",
    "explain": "reports/explain/environment.json",
    "export": "reports/export/environment.json",
    "global": "reports/global/environment.json",
}
VARYING = ("timing.json", "environment.json")  # differ by nature: not compared for bits


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def read_at(repo: Path, rev: str, path: str) -> str | None:
    """A file's text at `rev`, or None when it is not there (the PR report's `Side.read`)."""
    data = Side(repo, rev).read(path)
    return None if data is None else data.decode("utf-8")


def stage_outputs(lock_text: str | None) -> dict[str, dict[str, str]]:
    """stage → {output path → md5} of a dvc.lock."""
    lock = yaml.safe_load(lock_text or "") or {}
    return {
        stage: {out["path"]: out["md5"] for out in entry.get("outs", [])}
        for stage, entry in lock.get("stages", {}).items()
    }


@dataclass(frozen=True)
class StageResult:
    """One stage's outputs, committed vs workspace."""

    stage: str
    identical: list[str]
    differing: dict[str, list[str]]  # output → its files that differ (git-tracked outputs)
    pulled: bool  # every output came from the remote (`make pull` / `make repro`)

    @property
    def verdict(self) -> str:
        if not self.differing:
            how = "pulled from the remote" if self.pulled else "reproduced"
            return f"bit-identical ({how})"
        return f"{len(self.differing)} of {len(self.identical) + len(self.differing)} differ"


def changed_files(repo: Path, base: str, path: str) -> list[str]:
    """Files under a git-tracked output that differ from `base` (new ones included)."""
    changed = git(repo, "diff", "--name-only", base, "--", path).split()
    untracked = git(repo, "ls-files", "--others", "--exclude-standard", "--", path).split()
    return sorted(set(changed) | set(untracked))


def compare_outputs(repo: Path, base: str) -> list[StageResult]:
    committed = stage_outputs(read_at(repo, base, "dvc.lock"))
    current = stage_outputs((repo / "dvc.lock").read_text(encoding="utf-8"))
    pulled = read_pull_record(repo)
    results = []
    for stage, outs in current.items():
        compared = {p: md5 for p, md5 in outs.items() if not p.endswith(VARYING)}
        before = committed.get(stage, {})
        same = [p for p, md5 in compared.items() if before.get(p) == md5]
        differing = {
            p: changed_files(repo, base, p) for p, md5 in compared.items() if before.get(p) != md5
        }
        came = bool(compared) and all(pulled.get(p) == md5 for p, md5 in compared.items())
        results.append(StageResult(stage, same, differing, came))
    return results


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
    """Fields of each stage's recorded environment: committed vs this machine now."""
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


def report(repo: Path, base: str, fingerprint: str) -> str:
    """The markdown `make verify` prints."""
    stale = subprocess.run([*DVC, "status", "-q"], cwd=repo, capture_output=True)
    if stale.returncode != 0:
        raise UserError("the workspace has stale stages (`dvc status`); run `dvc repro` first")
    calibration_text = read_at(repo, base, CALIBRATION)
    calibration = json.loads(calibration_text) if calibration_text else {}
    results = compare_outputs(repo, base)
    lines = [f"# What reproduced: workspace vs `{base}`", ""]
    table = pd.DataFrame([{"stage": r.stage, "outputs": r.verdict} for r in results]).to_markdown(
        index=False
    )
    lines += [table, ""]
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
        f"Training fingerprint here {fingerprint}, {same} the committed one ({reference}, "
        f"{recorded.get('cpu', 'unknown CPU')}): "
        + (
            "this machine retrains the committed bits."
            if reference == fingerprint
            else "this machine trains other bits; pull the outputs from the remote instead."
        ),
        "",
    ]
    environment = environment_changes(repo, base)
    lines.append(
        "Environment as each stage recorded it vs here: "
        + ("the same." if environment.empty else "\n\n" + environment.to_markdown(index=False))
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="the revision whose dvc.lock to compare")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    git(repo, "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    from fmnist_shap.train import training_fingerprint

    sys.stdout.write(report(repo, args.base, training_fingerprint()))


if __name__ == "__main__":
    run_cli(main)


def own_inputs(lock_text: str | None) -> dict[str, dict]:
    """stage → the inputs a change makes (code, data, params): its deps that no stage of the
    pipeline produces, and its params."""
    lock = yaml.safe_load(lock_text or "") or {}
    stages = lock.get("stages", {})
    produced = {out["path"] for entry in stages.values() for out in entry.get("outs", [])}
    return {
        stage: {
            "deps": {
                d["path"]: d.get("md5") for d in entry.get("deps", []) if d["path"] not in produced
            },
            "params": entry.get("params", {}),
        }
        for stage, entry in stages.items()
    }


def provenance(repo: Path, base: str) -> str:
    """One verdict line: for the stages this change did not touch, whether their outputs were
    pulled, reproduced bit-identically, or recomputed to other bits (and on which CPU), so a
    reviewer does not mistake a hardware difference for a change."""
    base_lock = read_at(repo, base, "dvc.lock")
    head_lock = (repo / "dvc.lock").read_text(encoding="utf-8")
    base_inputs, head_inputs = own_inputs(base_lock), own_inputs(head_lock)
    groups: dict[str, list[str]] = {"pulled": [], "reproduced bit-identically": [], "other": []}
    for result in compare_outputs(repo, base):
        if base_inputs.get(result.stage) != head_inputs.get(result.stage):
            continue  # changed by this revision: its differences are the change's
        if not result.differing:
            groups["pulled" if result.pulled else "reproduced bit-identically"].append(result.stage)
        else:
            groups["other"].append(result.stage)
    parts = [
        f"{', '.join(stages)} {how}" for how, stages in groups.items() if stages and how != "other"
    ]
    if groups["other"]:
        cpus = []
        for stage in groups["other"]:
            path = ENVIRONMENTS.get(stage)
            if path is None:
                continue
            before = json.loads(read_at(repo, base, path) or "{}").get("cpu", "unknown CPU")
            now_file = repo / path
            now = (
                json.loads(now_file.read_text(encoding="utf-8")).get("cpu")
                if now_file.is_file()
                else None
            )
            cpus.append(f"{before} → {now or 'unknown CPU'}")
        where = f" ({'; '.join(sorted(set(cpus)))})" if cpus else ""
        parts.append(
            f"**{', '.join(groups['other'])} recomputed to other bits without a change of their "
            f"own code, data or params**{where}: their differences come from the machine "
            "(or a stage upstream), not from this change"
        )
    if not read_pull_record(repo):
        parts.append("nothing was pulled (no shared remote could be read): computed here")
    return "- **Stages this change did not touch**: " + ("; ".join(parts) or "none") + "."
