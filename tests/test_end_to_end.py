"""End to end on real git and real DVC: one small-params copy of the project, reproduced once
and shared by every test here, in order — outputs, determinism, precise deps, a remote and a
fresh clone, experiments, and the PR report built from one of them."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fmnist_shap.remote import PullRecord
from fmnist_shap.review.provenance import provenance
from tests.conftest import SMALL_PARAMS, VARIANTS, S3Server, run, small_project

pytestmark = pytest.mark.slow


def lock_hashes(repo: Path) -> dict[str, str]:
    """Every output's md5 in dvc.lock, by path."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


@dataclass(frozen=True)
class Project:
    path: Path
    env: dict[str, str]
    repro_output: str  # what the first `dvc repro` printed

    def run(self, *cmd: str) -> str:
        return run(list(cmd), self.path, self.env)

    def run_bytes(self, *cmd: str) -> bytes:
        return subprocess.run(list(cmd), cwd=self.path, capture_output=True, check=True).stdout

    def back_to_head(self) -> None:
        """Drop what a test left in the workspace and the index (DVC's autostage `git add`s
        what `dvc repro` writes): git files, then DVC outputs."""
        self.run("git", "reset", "--quiet", "--hard", "HEAD")
        self.run("dvc", "checkout", "--force", "--quiet")


@pytest.fixture(scope="module")
def project(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The small-params copy, reproduced and committed as `main`."""
    path = tmp_path_factory.mktemp("e2e") / "project"
    env, output = small_project(path, raw_dir)
    return Project(path, env, output)


def test_repro_builds_every_output(project: Project) -> None:
    for stage in ("prepare", "train", "evaluate", "explain", "export", "global", "summarize"):
        assert f"Running stage '{stage}'" in project.repro_output
    root = project.path
    for rel in (
        "data/prepared/train.npz",
        "data/prepared/test.npz",
        "models/model.npz",
        "reports/train/plots/metrics/val_loss.tsv",
        "reports/eval/plots/sklearn/confusion.json",
        "reports/eval/classification_report.txt",
        "reports/explain/plots/partition-telea-correct.png",
        "reports/explain/plots/permutation-telea-wrong.png",
        "reports/explain/variants/permutation-telea/values.npz",
        "reports/explain/variants/permutation-telea/samples.csv",
        "reports/explain/variants/integrated_gradients/curves.csv",
        "reports/faithfulness/summary.md",
        "reports/faithfulness/curves.csv",
        "reports/explain/plots/deep-review.png",
        "models/export/saved_model/saved_model.pb",
        "models/export/model.tflite",
        "models/export/model.jax_export",
        "reports/global/plots/integrated_gradients.png",
        "reports/global/maps.npz",
    ):
        assert (root / rel).is_file(), rel
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert 0.5 < metrics["accuracy"] <= 1.0  # one epoch on 2k real images
    assert len(json.loads((root / "reports/eval/plots/sklearn/confusion.json").read_text())) == 1000
    explain_metrics = json.loads((root / "reports/explain/metrics.json").read_text())
    assert set(explain_metrics) == set(VARIANTS)  # only the selected variants
    assert explain_metrics["partition-telea"]["additivity_max_error"] < 1e-4
    assert explain_metrics["partition-telea"]["evals_per_image"] == 100
    assert explain_metrics["deep"]["additivity_max_error"] < 1e-4
    assert explain_metrics["deep"]["evals_per_image"] == 20  # one pass per background image
    exported = json.loads((root / "reports/export/metrics.json").read_text())
    assert exported["images"] == 1000 and exported["twin_max_logit_diff"] <= 1e-4
    for kind in ("saved_model", "tflite", "jax_export"):
        assert exported[kind]["class_agreement"] == 1.0, kind
    assert json.loads((root / "reports/global/metrics.json").read_text()) == {
        "integrated_gradients": {"images": 10}
    }
    assert json.loads((root / "reports/global/timing.json").read_text())["workers"] == 2


def test_status_clean_and_second_repro_does_nothing(project: Project) -> None:
    assert "up to date" in project.run("dvc", "status")
    assert "Running stage" not in project.run("dvc", "repro")


def test_metrics_and_plots_commands_work(project: Project) -> None:
    shown = json.loads(project.run("dvc", "metrics", "show", "--json"))
    files = shown[""]["data"]
    assert "accuracy" in files["reports/eval/metrics.json"]["data"]
    assert "val_accuracy" in files["reports/train/metrics.json"]["data"]
    explain_metrics = files["reports/explain/metrics.json"]["data"]
    for variant in VARIANTS:
        for key in (
            "additivity_max_error",
            "deletion_auc",
            "insertion_auc",
            "deletion_auc_random",
            "insertion_auc_random",
            "randomization_spearman",
        ):
            assert key in explain_metrics[variant], (variant, key)
    table = project.run("dvc", "metrics", "show", "--md")
    assert "permutation-telea.insertion_auc" in table  # one column per variant and metric
    experiments = project.run("dvc", "exp", "show", "--md")
    for column in ("deep.deletion_auc", "tflite.max_logit_diff", "twin_max_logit_diff"):
        assert column in experiments, column
    out = project.run("dvc", "plots", "show", "-o", "plots_html")
    html = (project.path / "plots_html" / "index.html").read_text()
    assert "Confusion matrix" in html and "Training curves" in html, out
    assert "Deletion AUC per variant" in html and "Insertion curves" in html
    for variant in VARIANTS:
        assert f"reports/explain/plots/{variant}-correct.png" in html
    assert "reports/global/plots/integrated_gradients.png" in html
    shutil.rmtree(project.path / "plots_html")


def test_forced_rerun_gives_identical_hashes(project: Project) -> None:
    before = lock_hashes(project.path)
    values = project.path / "reports/explain/variants/permutation-telea/values.npz"
    values_bytes = values.read_bytes()
    project.run("dvc", "repro", "-f")
    after = lock_hashes(project.path)
    # Timing is the one output that differs by nature; it lives in its own file.
    timing = {path for path in before if path.endswith("timing.json")}
    assert {p: h for p, h in after.items() if p not in timing} == {
        p: h for p, h in before.items() if p not in timing
    }
    assert {"models/model.npz", "models/export", "reports/explain/variants"} <= set(before)
    assert values.read_bytes() == values_bytes
    project.back_to_head()


@pytest.mark.skipif(not shutil.which("taskset"), reason="taskset (util-linux) is not installed")
def test_a_rerun_on_one_core_leaves_git_status_clean(project: Project) -> None:
    """Another core count is another machine for the run record, not for dvc.lock."""
    before = project.run("git", "status", "--porcelain")
    out = project.run("taskset", "-c", "0", "dvc", "repro", "-f", "-s", "evaluate")
    assert "Running stage 'evaluate'" in out
    assert project.run("git", "status", "--porcelain") == before
    record = json.loads((project.path / ".dvc/tmp/runs/evaluate.json").read_text())
    assert record["cores"] == 1


def test_verify_says_what_reproduced(project: Project) -> None:
    """`make verify` against the commit it reproduced, then against a base made "elsewhere":
    other XLA flags recorded, another model hash, an accuracy 0.001 higher."""
    here = project.run("python", "-m", "fmnist_shap.review.verify")
    for stage in ("prepare", "train", "evaluate", "explain", "export", "global", "summarize"):
        assert re.search(rf"\| {stage} +\| rerun here: bit-identical +\| ran here \(", here), here
    assert "Metrics that differ\n\nnone" in here
    assert (
        "same as the committed one" in here and "what decides the bits) vs here: the same." in here
    )

    root = project.path
    lock = (root / "dvc.lock").read_text()
    metrics_file = root / "reports/eval/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    old_md5 = {
        p: h
        for p, h in lock_hashes(root).items()
        if p in ("models/model.npz", "reports/eval/metrics.json")
    }
    elsewhere = json.loads((root / "reports/train/environment.json").read_text()) | {
        "xla_flags": ""
    }
    project.run("git", "checkout", "-q", "-b", "elsewhere")
    for path, md5 in old_md5.items():  # another (well-formed) hash, as other settings would give
        lock = lock.replace(md5, hashlib.md5(path.encode()).hexdigest())
    (root / "dvc.lock").write_text(lock)
    metrics_file.write_text(json.dumps(metrics | {"accuracy": metrics["accuracy"] + 0.001}))
    (root / "reports/train/environment.json").write_text(json.dumps(elsewhere))
    calibration = {
        "change": "train.seed 0 → 1",
        "commit": "abc1234",
        "metrics": {"reports/eval/metrics.json:accuracy": 0.0042},
    }
    (root / "reports/calibration.json").write_text(json.dumps(calibration))
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "made elsewhere, with a calibration", "--no-verify")
    project.run("git", "checkout", "-q", "main")
    project.back_to_head()

    there = project.run("python", "-m", "fmnist_shap.review.verify", "--base", "elsewhere")
    assert re.search(r"\| train +\| rerun here: other bits +\| .*1 of \d outputs differ", there)
    assert re.search(r"\| evaluate +\| rerun here: other bits", there)
    assert re.search(r"\| explain +\| rerun here: bit-identical", there)
    assert "`reports/eval/metrics.json` differs: reports/eval/metrics.json" in there
    assert re.search(
        r"reports/eval/metrics.json:accuracy +\| +[\d.]+ +\| +[\d.]+ +\| +-0.001 +\| +0.0042", there
    ), there
    assert re.search(r"\| train +\| xla_flags +\| +\| --xla_cpu", there), there
    line = provenance(root, "elsewhere")
    assert "rerun here to other bits than elsewhere without a change of code" in line
    assert "train (models/model.npz; " in line and "evaluate (reports/eval/metrics.json; " in line
    assert (
        "rerun here, bit-identical to elsewhere: prepare, explain, export, global, summarize"
        in line
    )
    # The guard publish.yml runs: one line naming what differs, exit 1.
    guard = subprocess.run(
        [sys.executable, "-m", "fmnist_shap.review.verify", "--base", "elsewhere", "--check"],
        cwd=root,
        env=project.env,
        capture_output=True,
        text=True,
    )
    assert guard.returncode == 1 and guard.stderr.count("\n") == 1
    assert "train: models/model.npz; evaluate: reports/eval/metrics.json" in guard.stderr
    project.run("git", "branch", "-q", "-D", "elsewhere")


def _stale_stages(project: Project) -> set[str]:
    status = json.loads(project.run("dvc", "status", "--json"))
    return {stage for stage in status if not stage.endswith(".dvc")}


def test_explain_code_and_params_rerun_only_what_reads_them(project: Project) -> None:
    with (project.path / "src/fmnist_shap/explain/methods/shap_image.py").open("a") as code:
        code.write("# an edit\n")
    assert _stale_stages(project) == {"explain", "global"}  # both explain with shap
    project.back_to_head()
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["explain"]["seed"] += 1
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"explain", "global"}
    project.back_to_head()
    params["explain"]["seed"] -= 1
    params["explain"]["top_k"] = 2  # read by explain only
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"explain"}
    project.back_to_head()
    params["explain"]["top_k"] = SMALL_PARAMS["explain"]["top_k"]
    params["global"]["chunk_size"] = 3  # read by global only
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"global"}
    project.back_to_head()
    with (project.path / "src/fmnist_shap/raw.py").open("a") as code:
        code.write("# an edit to the download code\n")
    assert _stale_stages(project) == {"prepare"}
    project.back_to_head()
    assert _stale_stages(project) == set()


def test_push_then_pull_in_a_fresh_clone(project: Project, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    project.run("dvc", "remote", "add", "--local", "-d", "-f", "test", str(remote))
    project.run("dvc", "push", "--quiet")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project.path), str(clone)], tmp_path, project.env)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "test", str(remote)], clone, project.env)
    run(["dvc", "pull", "--quiet"], clone, project.env)
    assert (clone / "models/model.npz").read_bytes() == (
        project.path / "models/model.npz"
    ).read_bytes()
    assert (clone / "data/raw/train-images-idx3-ubyte").is_file()
    assert "up to date" in run(["dvc", "status"], clone, project.env)
    assert "Running stage" not in run(["dvc", "repro"], clone, project.env)
    assert lock_hashes(clone) == lock_hashes(project.path)


def _s3_env(env: dict[str, str], keys: dict[str, str], home: Path) -> dict[str, str]:
    """`env` with only `keys` as AWS credentials (no user's AWS files)."""
    clean = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    return (
        clean
        | keys
        | {"AWS_CONFIG_FILE": str(home / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none")}
    )


def test_s3_remote_carries_outputs_and_experiments_between_clones(
    project: Project, s3_server: S3Server, tmp_path: Path
) -> None:
    """The team setup: outputs pushed once with write keys; a fresh clone with read-only keys
    pulls instead of recomputing; an experiment travels with `dvc exp push` / `dvc exp pull`."""
    url, endpoint = f"s3://{s3_server.bucket}/project", s3_server.endpoint
    writer = _s3_env(project.env, s3_server.writer, tmp_path)
    reader = _s3_env(project.env, s3_server.reader, tmp_path)

    def clone(name: str) -> Path:
        path = tmp_path / name
        run(["git", "clone", "-q", str(project.path), str(path)], tmp_path, project.env)
        run(["dvc", "remote", "add", "--local", "-d", "team", url], path, project.env)
        run(
            ["dvc", "remote", "modify", "--local", "team", "endpointurl", endpoint],
            path,
            project.env,
        )
        return path

    project.run("dvc", "remote", "add", "--local", "-d", "-f", "team", url)
    project.run("dvc", "remote", "modify", "--local", "team", "endpointurl", endpoint)
    run(["dvc", "push", "--quiet"], project.path, writer)

    first = clone("first")
    pulled = run([sys.executable, "-m", "fmnist_shap.remote", "pull"], first, reader)
    total = len(lock_hashes(first))
    # The DVC-cached outputs came from the remote; the rest are in git and were not pulled.
    in_git = {p for p in lock_hashes(first) if run(["git", "ls-files", p], first, reader).strip()}
    cached = total - len(in_git)
    assert 0 < cached < total and f"pulled {cached} of {total} outputs of dvc.lock" in pulled
    assert set(PullRecord.read(first).outs) == set(lock_hashes(first)) - in_git
    assert "up to date" in run(["dvc", "status"], first, reader)
    assert "Running stage" not in run(["dvc", "repro"], first, reader)
    assert (first / "models/model.npz").read_bytes() == (
        project.path / "models/model.npz"
    ).read_bytes()

    # An experiment with another model in the first clone; read-only keys cannot publish its
    # outputs, write keys can.
    run(["dvc", "exp", "run", "--quiet", "-n", "seed-1", "-S", "train.seed=1"], first, writer)
    denied = subprocess.run(["dvc", "push"], cwd=first, env=reader, capture_output=True, text=True)
    said = denied.stdout + denied.stderr
    assert denied.returncode != 0 and any(w in said for w in ("403", "Forbidden", "AccessDenied"))
    shared = tmp_path / "shared.git"  # the team's git remote (not the project: it stays as is)
    run(["git", "init", "-q", "--bare", str(shared)], tmp_path, project.env)
    run(["git", "remote", "add", "shared", str(shared)], first, project.env)
    run(["dvc", "exp", "push", "shared", "seed-1"], first, writer)

    second = clone("second")
    run(["git", "remote", "add", "shared", str(shared)], second, project.env)
    run(["dvc", "exp", "pull", "shared", "seed-1"], second, reader)
    assert "seed-1" in run(["dvc", "exp", "show", "--md"], second, reader)
    run(["dvc", "exp", "apply", "seed-1"], second, reader)
    assert "up to date" in run(["dvc", "status"], second, reader)
    model = (second / "models/model.npz").read_bytes()
    assert model == (first / "models/model.npz").read_bytes()
    assert model != (project.path / "models/model.npz").read_bytes()  # the experiment's own
    metrics = "reports/eval/metrics.json"
    assert (second / metrics).read_text() == (first / metrics).read_text()
    project.run("dvc", "remote", "remove", "--local", "team")


def _accuracy(row: dict) -> float:
    return row["data"]["metrics"]["reports/eval/metrics.json"]["data"]["accuracy"]


def test_experiment_show_and_diff(project: Project) -> None:
    project.run("dvc", "exp", "run", "--quiet", "-n", "lr-high", "-S", "train.lr=0.008")
    shown = json.loads(project.run("dvc", "exp", "show", "--json"))
    baseline = (shown[0]["rev"] == "workspace" and shown[1]) or shown[0]
    experiments = {
        exp["name"]: exp["revs"][0] for commit in shown for exp in (commit.get("experiments") or [])
    }
    assert set(experiments) == {"lr-high"}
    high = experiments["lr-high"]
    assert high["data"]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.008
    assert _accuracy(high) != _accuracy(baseline)
    explain_metrics = high["data"]["metrics"]["reports/explain/metrics.json"]["data"]
    assert set(explain_metrics) == set(VARIANTS)  # every variant's metrics, per experiment
    diff = project.run("dvc", "exp", "diff", "main", "lr-high", "--md")
    assert "train.lr" in diff and "0.008" in diff and "accuracy" in diff


def test_pr_report_reads_top_down(project: Project) -> None:
    """The workspace holds the last experiment (lr-high); the report compares it with main:
    a verdict first, then the review set's plots of base and head, then the details."""
    repo = project.path
    base_accuracy = json.loads(project.run("git", "show", "main:reports/eval/metrics.json"))[
        "accuracy"
    ]
    head_accuracy = json.loads((repo / "reports/eval/metrics.json").read_text())["accuracy"]
    assert head_accuracy != base_accuracy
    project.run("python", "-m", "fmnist_shap.review.report", "--base", "main")
    report = (repo / "reports/pr-report.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Verdict", "## Review set: the same images, base and head"]
    verdict = report.split("## Verdict")[1].split("## Review set")[0].strip().splitlines()
    assert len(verdict) <= 15
    assert f"{base_accuracy:.4f} → {head_accuracy:.4f}" in report and "95% CI" in report
    assert "train.lr 0.002 → 0.008" in report and "McNemar exact p = " in report

    def entries(data: str) -> list[tuple[str, str]]:
        return [(e["actual"], e["predicted"]) for e in json.loads(data)]

    confusion = "reports/eval/plots/sklearn/confusion.json"
    base = entries(project.run("git", "show", f"main:{confusion}"))
    head = entries((repo / confusion).read_text())
    broke = sum(b[0] == b[1] and h[0] != h[1] for b, h in zip(base, head, strict=True))
    fixed = sum(b[0] != b[1] and h[0] == h[1] for b, h in zip(base, head, strict=True))
    assert f"{broke} right → wrong, {fixed} wrong → right (of 1000 test images)" in report
    # The review set: the same images on both sides, so the drift is measured, below 1.
    drift = re.search(r"Explanation drift.*?: (.*)", report)
    assert drift and "not compared" not in drift.group(0)
    assert all(0 < float(v.split()[-1]) < 1 for v in drift.group(1).split(", "))
    for variant in VARIANTS:
        base_png = repo / f"reports/pr/base/{variant}-review.png"
        assert f"pr/head/{variant}-review.png" in report
        committed = project.run_bytes(
            "git", "show", f"main:reports/explain/plots/{variant}-review.png"
        )
        assert base_png.read_bytes() == committed  # the base image really is the base's
    assert report.count("<details>") >= 6
    assert re.search(r"\| partition-telea +\| \d\.\d{3} → \d\.\d{3} ", report)  # base → head
    if broke:
        assert (repo / "reports/pr/head/right-to-wrong.png").is_file()
