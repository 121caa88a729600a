"""The fault table (docs/reliability.md): what the pipeline does when a stage is killed, the
remote dies, the disk fills, experiments run side by side or the cache is corrupted — each row
with real processes, real dvc and real servers, on one small-params copy of the project."""

import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from fmnist_shap.review.provenance import VARYING, lock_of, stage_outputs
from tests.conftest import run, small_project

pytestmark = pytest.mark.slow

KILLED_STAGES = ("prepare", "train", "explain", "export", "global")
GONE_WITHIN_S = 10.0  # every process of a killed stage is gone by then


@dataclass(frozen=True)
class Project:
    path: Path
    env: dict[str, str]
    seconds: dict[str, float]  # how long each stage's own process lives, uninterrupted

    def run(self, *cmd: str) -> str:
        return run(list(cmd), self.path, self.env)

    def outputs(self) -> dict[str, dict[str, str]]:
        """stage → {output path → md5} of the workspace's dvc.lock."""
        return stage_outputs(lock_of((self.path / "dvc.lock").read_text()))

    def files(self, stage: str) -> dict[str, str]:
        """Every file under `stage`'s outputs (temporary leftovers included): path → sha256."""
        found = {}
        for out in self.outputs()[stage]:
            root = self.path / out
            for file in [root] if root.is_file() else sorted(root.rglob("*")):
                if file.is_file():
                    found[str(file.relative_to(self.path))] = sha256(file)
        return found

    def leftovers(self) -> list[str]:
        """Temporary files of an interrupted atomic write (`.NAME.*.tmp`) anywhere outside .dvc
        and .git."""
        return sorted(
            str(p.relative_to(self.path))
            for p in self.path.rglob(".*.tmp")
            if not {".dvc", ".git"} & set(p.relative_to(self.path).parts)
        )

    def back_to_head(self) -> None:
        self.run("git", "reset", "--quiet", "--hard", "HEAD")
        self.run("dvc", "checkout", "--force", "--quiet")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def comparable(outputs: dict[str, str]) -> dict[str, str]:
    return {path: digest for path, digest in outputs.items() if Path(path).name not in VARYING}


@pytest.fixture(scope="module")
def project(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The small-params copy, reproduced and committed, with each killed stage's own time."""
    path = tmp_path_factory.mktemp("faults") / "project"
    env, _ = small_project(path, raw_dir)
    project = Project(path, env, {})
    for stage in KILLED_STAGES:
        repro = start_repro(project, stage, path.parent / f"{stage}.log")
        process, started = wait_for_stage(repro, stage)
        process.wait(timeout=600)
        project.seconds[stage] = time.monotonic() - started
        assert repro.wait(timeout=600) == 0, (path.parent / f"{stage}.log").read_text()
    project.back_to_head()
    return project


def start_repro(project: Project, stage: str, log: Path) -> subprocess.Popen:
    """`dvc repro -f -s STAGE` in a session of its own (its pid is the session's id), printing
    to `log` (a file: orphans would hold a pipe open)."""
    return subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", stage],
        cwd=project.path,
        env=project.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_stage(repro: subprocess.Popen, stage: str) -> tuple[psutil.Process, float]:
    """The stage's own process once it runs, and when it was first seen."""
    deadline = time.monotonic() + 120
    while (process := stage_process(repro.pid, stage)) is None:
        assert repro.poll() is None and time.monotonic() < deadline, f"{stage} never started"
        time.sleep(0.01)
    return process, time.monotonic()


def session_processes(session: int) -> list[psutil.Process]:
    """The live (not zombie) processes of a session."""
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != "zombie":
                alive.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def stage_process(session: int, stage: str) -> psutil.Process | None:
    """The stage's own Python process (DVC runs it through a shell)."""
    for process in session_processes(session):
        try:
            cmdline = process.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "python" in Path(cmdline[0]).name and f"stages/{stage}.py" in cmdline[1:2]:
            return process
    return None


def kill_mid_run(project: Project, stage: str, signum: int) -> tuple[float, str]:
    """`dvc repro -f -s STAGE`, `signum` to the stage's process halfway through its usual
    life; returns the seconds from the signal until no process of the session
    lives, and what dvc printed."""
    log = project.path.parent / f"{stage}-{signum}.log"
    repro = start_repro(project, stage, log)
    target, started = wait_for_stage(repro, stage)
    time.sleep(max(0.0, started + project.seconds[stage] / 2 - time.monotonic()))
    assert target.is_running(), f"{stage} finished before the signal"
    if signum == signal.SIGKILL and stage == "explain":  # the pool's workers are up by now
        assert target.children(), "explain's pool has no workers to outlive it"
    sent = time.monotonic()
    target.send_signal(signum)
    repro.wait(timeout=60)
    while alive := session_processes(repro.pid):
        if time.monotonic() - sent > 60:
            for process in alive:
                process.kill()
            pytest.fail(f"{[p.cmdline()[:3] for p in alive]} outlived {stage} by 60 s")
        time.sleep(0.05)
    gone = time.monotonic() - sent
    printed = log.read_text()
    assert repro.returncode != 0, printed
    return gone, printed


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("stage", KILLED_STAGES)
def test_a_killed_stage_leaves_no_process_and_no_partial_output(
    project: Project, stage: str, signum: int
) -> None:
    """Row 1: every process of the stage is gone within 10 s; each output file left is
    complete (the uninterrupted run's bytes); the rerun gives the uninterrupted run's bytes."""
    before_files = project.files(stage)
    before_lock = project.outputs()
    try:
        seconds, printed = kill_mid_run(project, stage, signum)
        print(f"{stage} {signal.Signals(signum).name}: last process gone after {seconds:.2f} s")
        assert seconds < GONE_WITHIN_S, (seconds, printed)
        left = project.files(stage)
        partial = {
            path: digest
            for path, digest in left.items()
            if before_files.get(path) != digest
            and Path(path).name not in VARYING
            and path not in project.leftovers()  # a writer's temporary: ignored by git and DVC
        }
        assert not partial, f"partial or stray output files after {signum}: {sorted(partial)}"
        if signum == signal.SIGINT:  # the writer's own cleanup ran
            assert not project.leftovers()
        project.run("dvc", "repro", "--single-item", stage)
        assert not project.leftovers()
        rerun = project.outputs()
        assert comparable(rerun[stage]) == comparable(before_lock[stage])
    finally:
        project.back_to_head()


def flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def cache_file(project: Project, md5: str) -> Path:
    return project.path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def lock_entry(project: Project, stage: str, path: str) -> dict:
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return next(out for out in lock["stages"][stage]["outs"] if out["path"] == path)


def run_status(project: Project, *cmd: str) -> tuple[int, str]:
    done = subprocess.run(
        list(cmd), cwd=project.path, env=project.env, capture_output=True, text=True
    )
    return done.returncode, done.stdout + done.stderr


def test_a_corrupted_cache_object_is_named_and_never_used(project: Project, tmp_path: Path) -> None:
    """Row 5: one byte flipped in DVC's cache copy of the model. `make verify` and `make push`
    name it in one line (push uploads nothing); `dvc status` names it, and neither checkout nor
    push uses it; `dvc repro` recomputes the same bytes."""
    md5 = lock_entry(project, "train", "models/model.npz")["md5"]
    flip_one_byte(cache_file(project, md5), 1000)
    remote = tmp_path / "remote"
    remote.mkdir()
    project.run("dvc", "remote", "add", "--local", "--default", "spare", str(remote))
    try:
        python = project.env["PATH"].split(os.pathsep)[0] + "/python"
        for module in ("fmnist_shap.review.verify", "fmnist_shap.remote"):
            args = ["push"] if module == "fmnist_shap.remote" else []
            code, said = run_status(project, python, "-m", module, *args)
            assert code == 2 and said.count("\n") == 1, said
            assert "DVC's cache copy of models/model.npz (cache file" in said, said
            assert "is corrupted" in said, said
        assert not list(remote.rglob("*")), "make push uploaded something"
        code, said = run_status(project, "dvc", "status")
        assert "not in cache:       models/model.npz" in said, said
        assert not cache_file(project, md5).exists()  # DVC dropped the damaged copy
        (project.path / "models/model.npz").unlink()
        code, said = run_status(project, "dvc", "checkout", "models/model.npz")
        assert code != 0 and not (project.path / "models/model.npz").exists(), said
        project.run("dvc", "repro")
        assert lock_entry(project, "train", "models/model.npz")["md5"] == md5
        assert sha256(cache_file(project, md5)) == sha256(project.path / "models/model.npz")
        project.run(python, "-m", "fmnist_shap.remote", "push")
        assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    finally:
        project.run("dvc", "remote", "remove", "--local", "spare")
        project.back_to_head()
