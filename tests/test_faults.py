"""The fault table (docs/reliability.md): what the pipeline does when a stage is killed, the
remote dies, the disk fills, experiments run side by side or the cache is corrupted — each row
with real processes, real dvc and real servers, on one small-params copy of the project."""

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from fmnist_shap.remote import cache_file, corrupted_outputs, lock_outputs, objects_of
from fmnist_shap.review.provenance import VARYING, lock_of, stage_outputs
from tests.conftest import S3Server, run, small_project

pytestmark = pytest.mark.slow

KILLED_STAGES = ("prepare", "train", "explain", "export", "global")
GONE_WITHIN_S = 10.0  # every process of a killed stage is gone by then
MID_RUN = 0.4  # the signal comes at this fraction of the stage process's uninterrupted life


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
    """`dvc repro -f -s STAGE`, `signum` to the stage's process at 40% of its usual life;
    returns the seconds from the signal until no process of the session
    lives, and what dvc printed."""
    log = project.path.parent / f"{stage}-{signum}.log"
    repro = start_repro(project, stage, log)
    target, started = wait_for_stage(repro, stage)
    time.sleep(max(0.0, started + project.seconds[stage] * MID_RUN - time.monotonic()))
    assert target.is_running(), f"{stage} finished before the signal"
    if stage == "explain":  # the pool's workers are up by now
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
        if signum == signal.SIGINT:  # one line and 130; or Python's own, still importing
            stopped = "error: interrupted; nothing was half-written" in printed
            assert (stopped and "exited with 130" in printed) or importing(printed), printed
        # --force: computed again, not restored from DVC's run cache
        project.run("dvc", "repro", "--force", "--single-item", stage)
        assert not project.leftovers()
        rerun = project.outputs()
        assert comparable(rerun[stage]) == comparable(before_lock[stage])
    finally:
        project.back_to_head()


def importing(printed: str) -> bool:
    """Whether a stage's Ctrl-C came while Python was still importing its modules, before its
    main (and its one-line handler) ran: a KeyboardInterrupt traceback of imports only."""
    trace = printed[printed.find("Traceback") :]
    return "KeyboardInterrupt" in trace and "in main" not in trace and "in run_cli" not in trace


def flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


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
    whole = cache_file(project.path, md5).read_bytes()
    flip_one_byte(cache_file(project.path, md5), 1000)
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
        assert not cache_file(project.path, md5).exists()  # DVC dropped the damaged copy
        (project.path / "models/model.npz").unlink()
        code, said = run_status(project, "dvc", "checkout", "models/model.npz")
        assert code != 0 and not (project.path / "models/model.npz").exists(), said
        project.run("dvc", "repro", "--force", "--single-item", "train")  # computed again
        assert lock_entry(project, "train", "models/model.npz")["md5"] == md5
        assert sha256(cache_file(project.path, md5)) == sha256(project.path / "models/model.npz")
        project.run(python, "-m", "fmnist_shap.remote", "push")
        assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    finally:
        project.run("dvc", "remote", "remove", "--local", "spare")
        if not cache_file(project.path, md5).exists():  # a failure above: the later rows need it
            cache_file(project.path, md5).write_bytes(whole)
        project.back_to_head()


def experiment_outputs(project: Project, name: str) -> dict[str, str]:
    """Every output's md5 in experiment `name`'s dvc.lock (timing files left out)."""
    refs = project.run("git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    (ref,) = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    lock = lock_of(project.run("git", "show", f"{ref}:dvc.lock"))
    return {
        path: md5
        for outputs in stage_outputs(lock).values()
        for path, md5 in comparable(outputs).items()
    }


def explain_workers(seen: list[list[int | None]], stop: threading.Event) -> None:
    """Sample, every 0.1 s, explain's pool workers alive: each one's core, None if unpinned."""
    while not stop.is_set():
        now = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                parent = process.parent()
                if "spawn_main" in " ".join(process.info["cmdline"] or []) and any(
                    arg.endswith("stages/explain.py") for arg in parent.cmdline()
                ):
                    cores = process.cpu_affinity()
                    now.append(cores[0] if len(cores) == 1 else None)
            except (psutil.NoSuchProcess, AttributeError):
                continue
        seen.append(now)
        time.sleep(0.1)


def test_queued_experiments_side_by_side_equal_the_same_run_alone(project: Project) -> None:
    """Row 4: two experiments queued and run with `dvc queue start -j 2` both succeed, each
    one's outputs bit-identical to the same experiment run alone; while both explain pools run,
    no two workers are pinned to the same core."""
    seeds = {"side-1": 1, "side-2": 2}
    try:
        for name, seed in seeds.items():
            project.run("dvc", "exp", "run", "--queue", "-S", f"explain.seed={seed}", "-n", name)
        seen: list[list[int | None]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=explain_workers, args=(seen, stop))
        sampler.start()
        start = time.monotonic()
        try:
            project.run("dvc", "queue", "start", "-j", "2")
            while "Queued" in (status := project.run("dvc", "queue", "status")) or (
                "Running" in status
            ):
                assert time.monotonic() - start < 1200, status
                time.sleep(1)
        finally:
            stop.set()
            sampler.join()
        print(f"queue of 2 on -j 2: {time.monotonic() - start:.0f} s")
        assert status.count("Success") == 2, status + project.run("dvc", "queue", "logs", "side-1")
        assert max(map(len, seen)) > 2, "the two explain pools never ran at the same time"
        pinned = [[core for core in now if core is not None] for now in seen]
        assert all(len(cores) == len(set(cores)) for cores in pinned), "two pinned to one core"
        for name, seed in seeds.items():
            # --force: every stage computed again, not restored from the queued run's cache
            alone = ("dvc", "exp", "run", "--force", "-S", f"explain.seed={seed}")
            project.run(*alone, "-n", f"alone-{seed}")
            assert experiment_outputs(project, name) == experiment_outputs(project, f"alone-{seed}")
    finally:
        run_status(project, "dvc", "queue", "stop", "--kill")
        project.run("dvc", "exp", "remove", "--all-commits", "--queue")
        project.back_to_head()


class DyingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that dies — every connection cut,
    new ones refused — once `die_after` bytes have passed in one direction; `revive` brings it
    back on the same port. The server behind it keeps what it had, as S3 does when the network
    to it fails."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.limits = {"up": float("inf"), "down": float("inf")}
        self.passed = {"up": 0, "down": 0}
        self.dead = threading.Event()
        self.revive()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revive(self) -> None:
        self.limits = {"up": float("inf"), "down": float("inf")}
        self.passed = {"up": 0, "down": 0}
        self.dead.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.sockets = [listener]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def die_after(self, direction: str, nbytes: int) -> None:
        self.limits[direction] = nbytes

    def _die(self) -> None:
        self.dead.set()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets = []

    def _accept(self, listener: socket.socket) -> None:
        while not self.dead.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    self.passed[direction] += len(data)
                    over = self.passed[direction] > self.limits[direction]
                if over:
                    self._die()
                    return
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def bucket_objects(s3_server: S3Server, prefix: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_server.writer["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server.writer["AWS_SECRET_ACCESS_KEY"],
    )
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_server.bucket, Prefix=prefix
        )
        for item in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() for key in keys}


def assert_whole(objects: dict[str, bytes]) -> None:
    """Every object DVC stored hashes to its name: none is partial."""
    for key, data in objects.items():
        name = "".join(key.split("/")[-2:]).removesuffix(".dir")
        assert hashlib.md5(data).hexdigest() == name, f"{key}: partial or damaged"


def s3_env(env: dict[str, str], keys: dict[str, str], home: Path) -> dict[str, str]:
    """`env` with only `keys` as AWS credentials (no user's AWS files)."""
    clean = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    none = str(home / "none")
    return clean | keys | {"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none}


def test_a_remote_that_dies_midway(project: Project, s3_server: S3Server, tmp_path: Path) -> None:
    """Row 2: the network to the S3 server dies halfway through `make push`, then halfway
    through `make pull` in a fresh clone: one line naming the remote and what to do; no partial
    object on the remote or in the clone's cache; rerunning completes, and `make verify --check`
    finds every output bit-identical."""
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = DyingProxy((host, int(port)))
    url = f"s3://{s3_server.bucket}/dying"
    writer = s3_env(project.env, s3_server.writer, tmp_path)
    reader = s3_env(project.env, s3_server.reader, tmp_path)
    python = project.env["PATH"].split(os.pathsep)[0] + "/python"

    def remote(path: Path, env: dict[str, str], action: str) -> tuple[int, str, float]:
        start = time.monotonic()
        done = subprocess.run(
            [python, "-m", "fmnist_shap.remote", action],
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
        )
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start

    def use_remote(path: Path) -> None:
        run(["dvc", "remote", "add", "--local", "-d", "-f", "team", url], path, project.env)
        run(
            ["dvc", "remote", "modify", "--local", "team", "endpointurl", proxy.endpoint],
            path,
            project.env,
        )

    try:
        use_remote(project.path)
        cached = sum(
            cache_file(project.path, oid).stat().st_size
            for md5 in lock_outputs(project.path).values()
            for oid in objects_of(project.path, md5)
            if cache_file(project.path, oid).is_file()
        )
        proxy.die_after("up", cached // 2)
        code, said, seconds = remote(project.path, writer, "push")
        print(f"push cut off: one line after {seconds:.1f} s: {said.strip()}")
        assert proxy.dead.is_set() and code == 2 and said.count("\n") == 1, said
        assert "DVC remote 'team'" in said and "rerun `make push`" in said, said
        # The uploads in flight when the network died never became objects: what is stored
        # (none at all when every upload was still in flight, as under load) is whole.
        stored = bucket_objects(s3_server, "dying/")
        print(f"the cut-off push stored {len(stored)} whole objects")
        assert_whole(stored)
        proxy.revive()
        code, said, _ = remote(project.path, writer, "push")
        assert code == 0, said
        complete = bucket_objects(s3_server, "dying/")
        assert_whole(complete)
        assert set(stored) < set(complete), "the cut-off push stored everything"

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(project.path), str(clone)], tmp_path, project.env)
        use_remote(clone)
        proxy.die_after("down", cached // 2)
        code, said, seconds = remote(clone, reader, "pull")
        print(f"pull cut off: one line after {seconds:.1f} s: {said.strip()}")
        assert proxy.dead.is_set() and code == 2 and said.count("\n") == 1, said
        assert "DVC remote 'team'" in said and "dvc pull failed" in said, said
        assert not corrupted_outputs(clone)  # no partial download taken for a whole object
        proxy.revive()
        code, said, _ = remote(clone, reader, "pull")
        assert code == 0, said
        checked = run([python, "-m", "fmnist_shap.review.verify", "--check"], clone, reader)
        assert "bit-identical" in checked, checked
    finally:
        proxy._die()
        project.run("dvc", "remote", "remove", "--local", "team")


@contextlib.contextmanager
def small_tmpfs(folder: Path, nbytes: int):
    """A tmpfs of `nbytes` mounted on `folder` (root only); skips the test where it cannot,
    fails instead when $FMNIST_TMPFS_TESTS is "required" (.ci/run)."""
    give_up = pytest.fail if os.environ.get("FMNIST_TMPFS_TESTS") == "required" else pytest.skip
    if os.geteuid() != 0:
        give_up("mounting a tmpfs needs root (CI runs .ci/run as root)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={nbytes}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        give_up(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """A file that fills `folder`'s file system up to `leave` free bytes."""
    stats = os.statvfs(folder)
    filler = folder / "filler.bin"
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def test_a_full_disk_mid_stage(project: Project) -> None:
    """Row 3: explain's output folder on a tmpfs holding its previous outputs; once the stage
    runs (DVC has removed those), another file fills the disk to half of what the stage will
    write. One line naming the output and the fix, no traceback; nothing half-written on the
    full disk; the previous outputs restore there bit for bit (git and DVC's cache); with space
    again the rerun gives the uninterrupted run's bytes."""
    folder = project.path / "reports" / "explain"
    before_files = project.files("explain")
    before_lock = project.outputs()["explain"]
    previous = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    size = sum(map(len, previous.values()))
    try:
        with small_tmpfs(folder, 4 * size):
            for relative, data in previous.items():
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(data)
            log = project.path.parent / "full-disk.log"
            repro = start_repro(project, "explain", log)
            wait_for_stage(repro, "explain")
            filler = fill(folder, size // 2)
            assert repro.wait(timeout=600) != 0
            said = log.read_text()
            stage_said = [line for line in said.splitlines() if line.startswith("error: ")]
            print(f"full disk: {stage_said}")
            assert "Traceback" not in said, said
            assert len(stage_said) == 1 and "No space left on device while writing" in said, said
            assert "free space there (`df -h" in said, said
            left = {
                str(p.relative_to(project.path)): sha256(p)
                for p in folder.rglob("*")
                if p.is_file() and p != filler
            }
            partial = {path for path, digest in left.items() if before_files.get(path) != digest}
            assert not partial - {str(folder.relative_to(project.path) / "timing.json")}, partial
            filler.unlink()
            project.back_to_head()  # the previous outputs, from git and DVC's cache
            assert project.files("explain") == before_files
        project.run("dvc", "repro", "--force", "--single-item", "explain")
        assert comparable(project.outputs()["explain"]) == comparable(before_lock)
    finally:
        project.back_to_head()
