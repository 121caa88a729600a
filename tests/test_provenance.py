"""Each stage's label (`review.provenance`): what changed follows the pipeline's graph, and each
of the five labels comes from what happened in a real git repository — a changed param, a pull
record, a run record with the same or other bits, nothing at all."""

import subprocess
from pathlib import Path

import yaml

from fmnist_shap.artifacts import write_json
from fmnist_shap.environment import RUNS
from fmnist_shap.remote import PullRecord
from fmnist_shap.review.provenance import changed_stages, provenance, stage_results
from tests.conftest import subprocess_env


def stage(deps: dict[str, str], outs: dict[str, str], params: dict | None = None) -> dict:
    entry = {
        "cmd": "true",
        "deps": [{"path": p, "md5": m} for p, m in deps.items()],
        "outs": [{"path": p, "md5": m} for p, m in outs.items()],
    }
    if params:
        entry["params"] = {"params.yaml": params}
    return entry


def pipeline(lr: float = 0.002, seed: int = 0, model: str = "m1", code: str = "c1") -> dict:
    """A small pipeline with the project's shape: a folder output read file by file."""
    return {
        "prepare": stage({"data/raw": "r.dir"}, {"data/prepared": "p.dir"}),
        "train": stage(
            {"data/prepared/train.npz": "t", "src/train.py": code},
            {"models/model.npz": model},
            {"train.lr": lr},
        ),
        "evaluate": stage({"models/model.npz": model}, {"reports/eval/metrics.json": "e"}),
        "explain": stage(
            {"models/model.npz": model},
            {"reports/explain/variants": "v.dir"},
            {"explain.seed": seed},
        ),
        "summarize": stage({"reports/explain/variants": "v.dir"}, {"reports/summary.md": "s"}),
    }


def test_a_change_reaches_every_stage_downstream_and_no_other() -> None:
    base = pipeline()
    assert changed_stages(base, pipeline()) == {}
    assert changed_stages(base, pipeline(seed=1)) == {
        "explain": "its own code, params or data",
        "summarize": "upstream: explain",
    }
    assert changed_stages(base, pipeline(code="c2")) == {
        "train": "its own code, params or data",
        "evaluate": "upstream: train",
        "explain": "upstream: train",
        "summarize": "upstream: train",
    }
    # Another model alone (other bits, not another input) changes nothing.
    assert changed_stages(base, pipeline(model="m2")) == {}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=subprocess_env(repo), check=True)


def test_each_label_from_what_happened(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    base = pipeline()
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": base}))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    # The workspace: explain's seed changed (explain, summarize: changed); evaluate ran here
    # to other bits; train ran here to the same bits; prepare's folder came from the remote.
    head = pipeline(seed=3)
    head["evaluate"]["outs"][0]["md5"] = "e-other"
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": head}))
    PullRecord("DVC remote 'team' (s3://b/f)", None, {"data/prepared": "p.dir"}).write(repo)
    for name, cores in (("train", 1), ("evaluate", 2), ("explain", 2)):
        write_json(repo / RUNS / f"{name}.json", {"cpu": "AMD EPYC", "cores": cores})

    labels = {r.stage: r.label for r in stage_results(repo, "main")}
    assert labels == {
        "prepare": "pulled",
        "train": "rerun here: bit-identical",
        "evaluate": "rerun here: other bits",
        "explain": "changed",
        "summarize": "changed",
    }
    line = provenance(repo, "main")
    assert line == (
        "- **Stages**: changed by this PR: explain, summarize (rerun here: explain); "
        "pulled from the remote: prepare; rerun here, bit-identical to main: train; "
        "**rerun here to other bits than main without a change of code, params or data**: "
        "evaluate (reports/eval/metrics.json; AMD EPYC, 2 cores)."
    )
    # A stage whose outputs were already there, with no record of a run or a pull.
    (repo / RUNS / "train.json").unlink()
    assert {r.stage: r.label for r in stage_results(repo, "main")}["train"] == "not rerun"


def test_a_run_without_a_remote_leaves_no_pull_record(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    PullRecord("DVC remote 'team' (s3://b/f)", None, {"models/model.npz": "m1"}).write(tmp_path)
    assert PullRecord.read(tmp_path).outs == {"models/model.npz": "m1"}
    PullRecord().write(tmp_path)  # what `make repro` writes when no remote is configured
    assert PullRecord.read(tmp_path) == PullRecord()
    assert "no shared remote configured" in PullRecord.read(tmp_path).text()
