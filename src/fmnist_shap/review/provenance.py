"""How each stage's outputs in the workspace came to be, against a base revision: the one label
`make verify` and the PR verdict give a stage.

- **changed** — its own code, params or data differ from the base's dvc.lock, or those of a stage
  upstream of it: its differences are the change's, whatever else happened;
- **rerun here** — it ran in this workspace since the last `make repro` / `make pull` (the
  run record `environment.record_run` leaves), and its outputs are *bit-identical* to the
  base's or have *other bits* (which files);
- **pulled** — it did not run here and some of its outputs came from the shared remote (the
  pull record of `fmnist_shap.remote`), the rest from git;
- **not rerun** — neither: its outputs were already committed in git or in DVC's cache.

Labels say what happened, never more: a stage whose outputs are committed and that DVC did not
rerun is "not rerun", not "reproduced".
"""

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmnist_shap.environment import RUNS
from fmnist_shap.remote import PullRecord
from fmnist_shap.review.changes import Side

VARYING = ("timing.json",)  # wall-clock seconds: differ by nature, not compared for bits


def lock_of(text: str | bytes | None) -> dict:
    return (yaml.safe_load(text or "") or {}).get("stages", {})


def stage_outputs(lock: dict) -> dict[str, dict[str, str]]:
    """stage → {output path → md5} of a parsed dvc.lock."""
    return {
        stage: {out["path"]: out["md5"] for out in entry.get("outs", [])}
        for stage, entry in lock.items()
    }


def _produced_by(lock: dict) -> dict[str, str]:
    return {out["path"]: stage for stage, entry in lock.items() for out in entry.get("outs", [])}


def _producer(path: str, produced: dict[str, str]) -> str | None:
    """The stage whose output is `path` or a folder holding it."""
    for out, stage in produced.items():
        if path == out or path.startswith(out.rstrip("/") + "/"):
            return stage
    return None


def own_inputs(lock: dict) -> dict[str, dict]:
    """stage → what a change makes: its deps that no stage produces (code, data) and its params."""
    produced = _produced_by(lock)
    return {
        stage: {
            "deps": {
                d["path"]: d.get("md5")
                for d in entry.get("deps", [])
                if _producer(d["path"], produced) is None
            },
            "params": entry.get("params", {}),
        }
        for stage, entry in lock.items()
    }


def upstream(lock: dict) -> dict[str, set[str]]:
    """stage → every stage whose outputs it reads, directly or through others."""
    produced = _produced_by(lock)
    direct = {
        stage: {
            s
            for d in entry.get("deps", [])
            if (s := _producer(d["path"], produced)) is not None and s != stage
        }
        for stage, entry in lock.items()
    }

    def reach(stage: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set()
        for s in direct.get(stage, ()):
            if s not in seen:
                found |= {s} | reach(s, seen | {stage})
        return found

    return {stage: reach(stage) for stage in lock}


def changed_stages(base_lock: dict, head_lock: dict) -> dict[str, str]:
    """stage → why it is changed: its own inputs differ, or an upstream stage's do."""
    base, head = own_inputs(base_lock), own_inputs(head_lock)
    own = {s for s in head if base.get(s) != head[s]}
    reasons = {s: "its own code, params or data" for s in own}
    for stage, ups in upstream(head_lock).items():
        if stage not in own and (hit := sorted(ups & own)):
            reasons[stage] = f"upstream: {', '.join(hit)}"
    return reasons


def read_runs(repo: Path) -> dict[str, dict]:
    """stage → the machine it ran on in this workspace (the run records)."""
    folder = repo / RUNS
    return {
        f.stem: json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))
    }


def machine_text(record: dict) -> str:
    cores = record.get("cores")
    return f"{record.get('cpu', 'unknown CPU')}, {cores} core{'s' * (cores != 1)}"


@dataclass(frozen=True)
class StageResult:
    """One stage of the workspace's dvc.lock against the base's."""

    stage: str
    identical: list[str]
    differing: dict[str, list[str]]  # output → its files that differ (git-tracked outputs)
    pulled: list[str]  # outputs whose bytes `make pull` / `make repro` brought from the remote
    ran: dict | None  # the run record: the machine it ran on here, or None
    changed: str | None  # why a change of code, params or data reaches it, or None

    @property
    def label(self) -> str:
        if self.changed is not None:
            return "changed"
        if self.ran is not None:
            return "rerun here: " + ("other bits" if self.differing else "bit-identical")
        return "pulled" if self.pulled else "not rerun"

    def detail(self, base: str) -> str:
        """What the label rests on, in words."""
        parts = []
        if self.changed is not None:
            parts.append(f"vs {base}: {self.changed}")
        if self.ran is not None:
            parts.append(f"ran here ({machine_text(self.ran)})")
        elif self.pulled:
            parts.append(f"{', '.join(self.pulled)} from the remote")
        else:
            parts.append("outputs already committed or in DVC's cache")
        if self.differing:
            parts.append(f"{len(self.differing)} of {self.total} outputs differ from {base}")
        return "; ".join(parts)

    @property
    def total(self) -> int:
        return len(self.identical) + len(self.differing)


def _git(repo: Path, *args: str) -> list[str]:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.split()


def changed_files(repo: Path, base: str, path: str) -> list[str]:
    """Files under a git-tracked output that differ from `base` (new ones included)."""
    changed = _git(repo, "diff", "--name-only", base, "--", path)
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "--", path)
    return sorted(set(changed) | set(untracked))


def stage_results(repo: Path, base: str) -> list[StageResult]:
    """Every stage of the workspace's dvc.lock, labelled against `base`."""
    side = Side(repo, base)
    base_lock = lock_of(side.read("dvc.lock"))
    head_lock = lock_of((repo / "dvc.lock").read_bytes())
    committed, current = stage_outputs(base_lock), stage_outputs(head_lock)
    changed = changed_stages(base_lock, head_lock)
    pulled, runs = PullRecord.read(repo).outs, read_runs(repo)
    ups = upstream(head_lock)
    results = []
    # Pipeline order: a stage has more stages upstream than any stage it reads from.
    for stage, outs in sorted(current.items(), key=lambda item: (len(ups[item[0]]), item[0])):
        compared = {p: md5 for p, md5 in outs.items() if not p.endswith(VARYING)}
        before = committed.get(stage, {})
        same = [p for p, md5 in compared.items() if before.get(p) == md5]
        differing = {
            p: changed_files(repo, base, p) for p, md5 in compared.items() if before.get(p) != md5
        }
        came = [p for p, md5 in outs.items() if pulled.get(p) == md5]
        results.append(
            StageResult(stage, same, differing, came, runs.get(stage), changed.get(stage))
        )
    return results


def provenance(repo: Path, base: str) -> str:
    """The verdict's line on how every stage got its outputs, grouped by label."""
    results = stage_results(repo, base)
    groups: dict[str, list[StageResult]] = {}
    for result in results:
        groups.setdefault(result.label, []).append(result)
    parts = []
    if "changed" in groups:
        ran = [r.stage for r in groups["changed"] if r.ran is not None]
        parts.append(
            f"changed by this PR: {', '.join(r.stage for r in groups['changed'])}"
            + (f" (rerun here: {', '.join(ran)})" if ran else "")
        )
    if "pulled" in groups:
        parts.append(f"pulled from the remote: {', '.join(r.stage for r in groups['pulled'])}")
    if "rerun here: bit-identical" in groups:
        stages = ", ".join(r.stage for r in groups["rerun here: bit-identical"])
        parts.append(f"rerun here, bit-identical to {base}: {stages}")
    if "rerun here: other bits" in groups:
        rows = [
            f"{r.stage} ({', '.join(r.differing)}; {machine_text(r.ran or {})})"
            for r in groups["rerun here: other bits"]
        ]
        parts.append(
            f"**rerun here to other bits than {base} without a change of code, params or "
            f"data**: {'; '.join(rows)}"
        )
    if "not rerun" in groups:
        stages = ", ".join(r.stage for r in groups["not rerun"])
        parts.append(f"not rerun (outputs committed or cached): {stages}")
    return "- **Stages**: " + "; ".join(parts) + "."
