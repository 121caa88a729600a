"""The GitHub workflows as GitHub runs them: nektos/act (host mode) runs the real files of
.github/workflows/ on this machine, against a bare git repository standing for GitHub and moto's
S3 server with IAM (a read-only key for pull requests, a writer for publish) standing for the
bucket. Stand-ins replace only the actions that need the internet: setup-python (this machine's
Python 3.12), setup-cml (a `cml` that records its arguments and the comment body, and refuses
without a token, as cml does) and upload-artifact (copies the files). The job's shell has no
venv on PATH; the venv itself is shared with the job through $VENV, as a cache would be.

The project is the small-params copy (`SMALL_PARAMS`), reproduced and pushed as `main`. Every
scenario asserts on outcomes: what the bucket holds, which stages ran, what the recorded
comment or job summary says.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, S3Server, run, small_project, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.act]

ACT = Path(sys.executable).parent / "act"
GITHUB_URL = "https://github.com/team/fmnist-shap.git"  # act reads the repository's name here
WORKFLOWS = REPO / ".github" / "workflows"
NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def pinned_actions() -> dict[str, str]:
    """owner/name → the commit every workflow pins it to (`uses: owner/name@sha`)."""
    found = {}
    for workflow in WORKFLOWS.glob("*.yml"):
        for name, ref in re.findall(r"uses: ([\w-]+/[\w-]+)@(\S+)", workflow.read_text()):
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{workflow.name}: {name}@{ref} not a SHA"
            found[name] = ref
    return found


STANDINS = {
    "actions/setup-python": """name: "setup-python stand-in, this machine's Python 3.12"
inputs:
  python-version:
    required: false
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "{python_dir}" >> "$GITHUB_PATH"
""",
    "iterative/setup-cml": """name: "setup-cml stand-in, a cml that records what it is asked"
inputs:
  version:
    required: false
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "${{{{ github.action_path }}}}/bin" >> "$GITHUB_PATH"
""",
    "actions/upload-artifact": """name: "upload-artifact stand-in, copies the files"
inputs:
  name:
    required: true
  path:
    required: true
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{{{ inputs.name }}}}
        FILES: ${{{{ inputs.path }}}}
      run: |
        mkdir -p "{records}/artifacts/$NAME"
        for f in $FILES; do cp -r --parents "$f" "{records}/artifacts/$NAME/"; done
""",
}
CML = """#!/usr/bin/env bash
# cml stand-in: refuses without a token, as cml does; else records its arguments and the body.
set -eu
[ -n "${{REPO_TOKEN:-}}" ] || {{ echo "cml: no REPO_TOKEN" >&2; exit 1; }}
dir="{records}/cml/$(date +%s%N)"
mkdir -p "$dir"
printf '%s\\n' "$@" > "$dir/args"
for arg in "$@"; do [ -f "$arg" ] && cp "$arg" "$dir/body.md"; done
"""


@dataclass(frozen=True)
class Run:
    """One act run: its output, and what the stand-ins recorded."""

    output: str
    returncode: int
    records: Path

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and "Job succeeded" in self.output

    def comments(self) -> list[str]:
        return [p.read_text() for p in sorted(self.records.glob("cml/*/body.md"))]

    def ran(self, stage: str) -> bool:
        return f"Running stage '{stage}'" in self.output

    def artifact(self, name: str, path: str) -> Path:
        return self.records / "artifacts" / name / path


@dataclass(frozen=True)
class GitHub:
    """The bare repository standing for GitHub, the bucket, and the stand-in actions."""

    root: Path
    bare: Path
    s3: S3Server
    env: dict[str, str]

    def clone(self, name: str) -> Path:
        """A clone of the bare repository whose origin then reads as github.com/team/fmnist-shap:
        act takes the repository's name from it, and the job needs no fetch (act copies the
        clone's .git, origin/main included, as a checkout with fetch-depth 0 has it)."""
        path = self.root / name
        run(["git", "clone", "-q", str(self.bare), str(path)], self.root, self.env)
        run(["git", "remote", "set-url", "origin", GITHUB_URL], path, self.env)
        return path

    def objects(self, folder: str) -> set[str]:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.s3.writer["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.s3.writer["AWS_SECRET_ACCESS_KEY"],
        )
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3.bucket, Prefix=f"{folder}/"
        )
        return {o["Key"].removeprefix(f"{folder}/") for p in pages for o in p.get("Contents", [])}

    def remote(self, folder: str) -> dict[str, str]:
        return {
            "DVC_REMOTE_URL": f"s3://{self.s3.bucket}/{folder}",
            "DVC_REMOTE_ENDPOINT": self.s3.endpoint,
        }

    def act(
        self,
        workdir: Path,
        workflow: str,
        event: dict,
        *,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> Run:
        name = workdir.name
        records = self.root / "records" / name
        records.mkdir(parents=True)
        standins = self.root / "standins" / name
        python_dir = (Path(sys.base_prefix) / "bin").as_posix()
        args = []
        for action, sha in pinned_actions().items():
            if action == "actions/checkout":
                continue  # act copies the local repository itself
            folder = standins / action.replace("/", "-")
            folder.mkdir(parents=True)
            text = STANDINS[action].format(python_dir=python_dir, records=records)
            (folder / "action.yml").write_text(text)
            if action == "iterative/setup-cml":
                (folder / "bin").mkdir()
                (folder / "bin" / "cml").write_text(CML.format(records=records))
                (folder / "bin" / "cml").chmod(0o755)
            args += ["--local-repository", f"{action}@{sha}={folder}"]
        event_name = "pull_request" if "pull_request" in event else "push"
        event_file = self.root / f"{name}-event.json"
        event_file.write_text(json.dumps(event))
        for key, value in (variables or {}).items():
            args += ["--var", f"{key}={value}"]
        for key, value in (secrets or {}).items():
            args += ["--secret", f"{key}={value}"]
        for key, value in ({"VENV": sys.prefix} | (env or {})).items():
            args += ["--env", f"{key}={value}"]
        cmd = [
            *prefix,
            str(ACT),
            event_name,
            "-W",
            f".github/workflows/{workflow}",
            "-e",
            str(event_file),
            "-P",
            "ubuntu-latest=-self-hosted",
            "--action-offline-mode",
            *args,
        ]
        done = subprocess.run(
            cmd, cwd=workdir, env=self.env, capture_output=True, text=True, timeout=1500
        )
        output = done.stdout + done.stderr
        (records / "act.log").write_text(output)
        return Run(output, done.returncode, records)


def pull_request(head_repo: str = "team/fmnist-shap") -> dict:
    return {
        "pull_request": {
            "base": {"ref": "main"},
            "head": {"ref": "feature", "repo": {"full_name": head_repo}},
        }
    }


PUSH_TO_MAIN = {"ref": "refs/heads/main"}


def host_env(tmp: Path) -> dict[str, str]:
    """The runner's environment: no venv on PATH, no AWS credentials or files of the user's."""
    env = subprocess_env(REPO / "src")
    env.pop("PYTHONPATH")
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    for key in NO_AWS:
        env.pop(key, None)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-files")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture(scope="module")
def github(
    raw_dir: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitHub]:
    """`main` of the small-params project, reproduced and committed, in a bare repository."""
    # The job finds the venv installed from this lock (setup-venv.sh's stamp), not a stale one.
    subprocess.run(["./scripts/setup-venv.sh", sys.prefix], cwd=REPO, check=True)
    root = tmp_path_factory.mktemp("github")
    env = subprocess_env(REPO / "src")
    maintainer = root / "maintainer"
    small_project(maintainer, raw_dir)
    bare = root / "team" / "fmnist-shap.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], root, env)
    run(["git", "push", "-q", str(bare), "main"], maintainer, env)
    yield GitHub(root, bare, s3_server, host_env(root))
    shutil.rmtree(root / "standins", ignore_errors=True)


def reader(github: GitHub) -> dict[str, str]:
    keys = github.s3.reader
    return {
        "DVC_READONLY_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
        "DVC_READONLY_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
    }


def writer(github: GitHub) -> dict[str, str]:
    keys = github.s3.writer
    return reader(github) | {
        "DVC_WRITE_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
        "DVC_WRITE_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
    }


def verdict_line(body: str, label: str) -> str:
    return next(line for line in body.splitlines() if line.startswith(f"- **{label}**"))


def branch_with(github: GitHub, name: str, section: str, key: str, value: object) -> Path:
    """A clone on branch `feature` whose one commit changes params.yaml's section.key."""
    path = github.clone(name)
    run(["git", "checkout", "-q", "-b", "feature"], path, github.env)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params[section][key] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", f"{section}.{key} = {value}"], path, github.env)
    return path


MAIN_OUTPUTS = "main-outputs"
TOKEN = {"GITHUB_TOKEN": "a-write-token"}  # what GitHub gives a branch of the repository


def publish(github: GitHub, name: str, folder: str, **options) -> Run:
    """publish.yml after a push to main, in a fresh clone, with the write keys."""
    return github.act(
        github.clone(name),
        "publish.yml",
        PUSH_TO_MAIN,
        variables=github.remote(folder),
        secrets=writer(github),
        **options,
    )


def pr_report(github: GitHub, workdir: Path, secrets: dict[str, str]) -> Run:
    """pr-report.yml on a pull request from a branch of the repository."""
    return github.act(
        workdir,
        "pr-report.yml",
        pull_request(),
        variables=github.remote(MAIN_OUTPUTS),
        secrets=secrets | TOKEN,
    )


def test_a_publish_fills_an_empty_remote_and_a_second_run_pushes_nothing(github: GitHub) -> None:
    assert github.objects(MAIN_OUTPUTS) == set()
    first = publish(
        github,
        "publish-1",
        MAIN_OUTPUTS,
    )
    assert first.succeeded, first.output[-3000:]
    # A fresh clone of main: the stages with DVC-cached outputs are computed here, and verify
    # says they came out bit-identical to the committed dvc.lock, so they are pushed.
    assert first.ran("train") and not first.ran("evaluate"), first.output[-3000:]
    assert re.search(r"\| train +\| rerun here: bit-identical", first.output)
    assert "verify: all" in first.output and "bit-identical to HEAD's dvc.lock" in first.output
    pushed = github.objects(MAIN_OUTPUTS)
    assert len(pushed) > 10

    second = publish(
        github,
        "publish-2",
        MAIN_OUTPUTS,
    )
    assert second.succeeded, second.output[-3000:]
    assert not second.ran("train") and not second.ran("prepare")
    assert re.search(r"\| train +\| pulled", second.output)
    assert "is up to date: nothing to upload" in second.output
    assert github.objects(MAIN_OUTPUTS) == pushed


def test_b_pr_of_explain_params_pulls_the_model_and_recomputes_what_reads_them(
    github: GitHub,
) -> None:
    workdir = branch_with(github, "pr-explain", "explain", "seed", 7)
    done = pr_report(github, workdir, reader(github))
    assert done.succeeded, done.output[-3000:]
    assert not done.ran("train") and not done.ran("prepare") and not done.ran("export")
    assert done.ran("explain") and done.ran("global") and done.ran("summarize")
    (body,) = done.comments()
    stages = verdict_line(body, "Stages")
    assert "changed by this PR: explain, global, summarize (rerun here: " in stages, stages
    assert "pulled from the remote: prepare, train, export" in stages, stages
    assert "not rerun (outputs committed or cached): evaluate" in stages, stages
    assert "Params changed**: explain.seed 0 → 7" in body
    assert verdict_line(body, "Remote").startswith("- **Remote**: ")
    assert "outputs pulled from DVC remote 'team'" in verdict_line(body, "Remote")
    # The same report in the job summary.
    assert "Stages**: changed by this PR: explain" in done.output


def test_c_pr_of_a_train_param_changes_every_downstream_stage(github: GitHub) -> None:
    workdir = branch_with(github, "pr-train", "train", "lr", 0.003)
    done = pr_report(github, workdir, reader(github))
    assert done.succeeded, done.output[-3000:]
    assert done.ran("train") and not done.ran("prepare")
    (body,) = done.comments()
    stages = verdict_line(body, "Stages")
    changed = "train, evaluate, explain, export, global, summarize"
    assert f"changed by this PR: {changed} (rerun here: {changed})" in stages, stages
    assert "pulled from the remote: prepare" in stages, stages


def test_d_fork_pr_computes_and_reports_without_write_access(github: GitHub) -> None:
    workdir = branch_with(github, "pr-fork", "explain", "seed", 3)
    done = github.act(workdir, "pr-report.yml", pull_request(head_repo="someone/fork-of-it"))
    assert done.succeeded, done.output[-3000:]
    assert done.comments() == []  # no comment: a fork's token could not post it
    report = done.artifact("pr-report", "reports/pr-report.md").read_text()
    assert "no shared remote configured" in verdict_line(report, "Remote")
    stages = verdict_line(report, "Stages")
    assert "changed by this PR: explain, global, summarize" in stages
    assert "rerun here, bit-identical to origin/main: prepare, train, export" in stages, stages
    assert "Stages**: changed by this PR: explain" in done.output  # the job summary


def test_e_publish_on_one_core_pushes_the_same_objects(github: GitHub) -> None:
    folder = "one-core"
    done = publish(
        github,
        "publish-1-core",
        folder,
        prefix=("taskset", "-c", "0"),
    )
    assert done.succeeded, done.output[-3000:]
    assert done.ran("train") and re.search(r"\| train +\| rerun here: bit-identical", done.output)
    assert re.search(r"ran here \([^)]*, 1 core\)", done.output)
    # Content-addressed: the same bits are the same object names.
    assert github.objects(folder) == github.objects(MAIN_OUTPUTS)


def test_e_publish_refuses_when_the_model_bits_differ(github: GitHub) -> None:
    folder = "other-bits"
    # The user's own XLA flag wins over the project's (environment.apply_xla_settings): the
    # platform-dependent math trains other weights, as another CPU could.
    flags = "--xla_cpu_enable_platform_dependent_math=true"
    done = publish(
        github,
        "publish-other-bits",
        folder,
        env={"XLA_FLAGS": flags},
    )
    assert not done.succeeded
    refusals = [line for line in done.output.splitlines() if "verify: outputs differ" in line]
    assert len(refusals) == 1 and "train: models/model.npz" in refusals[0], done.output[-3000:]
    assert github.objects(folder) == set()  # nothing pushed


def test_f_pr_with_refused_keys_computes_and_says_so(github: GitHub) -> None:
    workdir = branch_with(github, "pr-bad-keys", "explain", "seed", 5)
    wrong = {"DVC_READONLY_ACCESS_KEY_ID": "nobody", "DVC_READONLY_SECRET_ACCESS_KEY": "wrong"}
    done = pr_report(github, workdir, wrong)
    assert done.succeeded, done.output[-3000:]
    notes = [line for line in done.output.splitlines() if "remote: " in line and "refused" in line]
    assert notes and "computing everything here" in notes[0]
    (body,) = done.comments()
    remote = verdict_line(body, "Remote")
    assert "could not be read" in remote and "credentials refused" in remote, remote
    assert done.ran("train")
