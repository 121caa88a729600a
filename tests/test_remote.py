"""The shared remote's check, against a real S3-API server on 127.0.0.1 (moto's, in its own
process): every way it cannot be read is one line naming the remote and the fix, before
anything is downloaded, and the workspace is left as it was. (Pushing, pulling and carrying
experiments between clones: tests/test_end_to_end.py.)"""

import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_shap.environment import RUNS
from fmnist_shap.remote import PULL_RECORD, PullRecord
from tests.conftest import REPO, S3Server, subprocess_env

NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def env_with(tmp_path: Path, credentials: dict[str, str]) -> dict[str, str]:
    """The subprocess environment with only `credentials` for AWS (no user's files)."""
    env = {k: v for k, v in subprocess_env(REPO / "src").items() if k not in NO_AWS}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-files")
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance-metadata lookup for credentials
    return env | credentials


def make_repo(path: Path, url: str, endpoint: str | None, env: dict[str, str]) -> Path:
    """A git + DVC repository with one tracked file and `url` as its default remote."""
    path.mkdir()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "team", url],
    ):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
    if endpoint:
        subprocess.run(
            ["dvc", "remote", "modify", "team", "endpointurl", endpoint],
            cwd=path,
            env=env,
            check=True,
            capture_output=True,
        )
    (path / "data.txt").write_text("tracked by DVC\n")
    subprocess.run(["dvc", "add", "-q", "data.txt"], cwd=path, env=env, check=True)
    (path / "data.txt").unlink()  # what a pull would bring back
    return path


def snapshot(repo: Path) -> dict[str, str]:
    """Every file under `repo` (DVC's temporary state aside) and its md5."""
    return {
        str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".dvc/tmp" not in str(p)
    }


def remote_cli(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # A remote that does not answer must not hold the command in retries: 60 s is a hang.
    cmd = [sys.executable, "-m", "fmnist_shap.remote", *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def refused(repo: Path, env: dict[str, str]) -> str:
    """`remote pull`'s one-line error; asserts it stopped before touching the workspace."""
    before = snapshot(repo)
    done = remote_cli(repo, env, "pull")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DVC remote 'team'"), done.stderr
    assert snapshot(repo) == before
    assert not (repo / "data.txt").exists()
    # make repro's form: the same line as a note, then it computes here
    note = remote_cli(repo, env, "pull", "--or-compute")
    assert note.returncode == 0 and "computing everything here" in note.stderr
    assert snapshot(repo) == before
    return lines[0]


def test_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = env_with(tmp_path, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    repo = make_repo(tmp_path / "repo", "s3://team-dvc/cache", f"http://127.0.0.1:{port}", env)
    line = refused(repo, env)
    assert f"http://127.0.0.1:{port} does not answer" in line and "endpointurl" in line


def test_wrong_credentials(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong"})
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/cache", s3_server.endpoint, env)
    line = refused(repo, env)
    assert "credentials refused" in line and "AWS_ACCESS_KEY_ID" in line


def test_missing_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, s3_server.reader)
    repo = make_repo(tmp_path / "repo", "s3://no-such-bucket/cache", s3_server.endpoint, env)
    line = refused(repo, env)
    assert "bucket 'no-such-bucket' does not exist" in line and "dvc remote modify team" in line


def test_no_credentials(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, {})
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/cache", s3_server.endpoint, env)
    assert "no credentials; export AWS_ACCESS_KEY_ID" in refused(repo, env)


def test_missing_folder_remote(tmp_path: Path) -> None:
    env = env_with(tmp_path, {})
    repo = make_repo(tmp_path / "repo", str(tmp_path / "nowhere"), None, env)
    assert "no such folder" in refused(repo, env)


def test_read_only_credentials_can_check_and_pull(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, s3_server.reader)
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/check", s3_server.endpoint, env)
    done = remote_cli(repo, env, "check")
    assert done.returncode == 0 and "can be read" in done.stderr, done.stderr


def test_no_remote_configured(tmp_path: Path) -> None:
    env = env_with(tmp_path, {})
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=env, check=True)
    done = remote_cli(repo, env, "pull", "--or-compute")
    assert done.returncode == 0
    assert done.stderr.strip() == (
        "remote: no DVC remote configured (docs/environment.md: the shared remote); computing everything here"
    )
    strict = remote_cli(repo, env, "pull")
    assert strict.returncode == 2 and "dvc remote add -d" in strict.stderr


@pytest.mark.parametrize("user", ["reader", "writer"])
def test_server_enforces_the_policies(s3_server: S3Server, user: str) -> None:
    """The fixture's server really refuses a write to the reader (else the read-only tests
    would prove nothing)."""
    import boto3
    from botocore.exceptions import ClientError

    keys = getattr(s3_server, user)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )
    if user == "writer":
        s3.put_object(Bucket=s3_server.bucket, Key="probe", Body=b"x")
        assert s3.get_object(Bucket=s3_server.bucket, Key="probe")["Body"].read() == b"x"
    else:
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.put_object(Bucket=s3_server.bucket, Key="probe-reader", Body=b"x")


def test_a_failing_pull_shows_dvcs_error_and_make_repro_computes(tmp_path: Path) -> None:
    """The check passes (the folder is there), then `dvc pull` itself fails: its own error is
    the line, `--or-compute` goes on, and the pull record says why nothing was pulled."""
    env = env_with(tmp_path, {})
    remote = tmp_path / "remote"
    remote.mkdir()
    repo = make_repo(tmp_path / "repo", str(remote), None, env)
    subprocess.run(["dvc", "push", "-q"], cwd=repo, env=env, check=True)
    (obj,) = [p for p in remote.rglob("*") if p.is_file()]
    obj.unlink()
    obj.mkdir()  # an object DVC cannot read
    shutil.rmtree(repo / ".dvc" / "cache")
    done = remote_cli(repo, env, "pull")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "dvc pull failed: IsADirectoryError: [Errno 21] Is a directory" in lines[0]
    note = remote_cli(repo, env, "pull", "--or-compute")
    assert note.returncode == 0 and note.stderr.strip().endswith("computing everything here")
    record = PullRecord.read(repo)
    assert record.outs == {} and "IsADirectoryError" in (record.problem or "")
    assert "could not be read" in record.text()


def test_the_pull_record_counts_only_what_came_from_the_remote(tmp_path: Path) -> None:
    env = env_with(tmp_path, {})
    remote = tmp_path / "remote"
    remote.mkdir()
    repo = make_repo(tmp_path / "repo", str(remote), None, env)
    stage = ["dvc", "stage", "add", "-q", "-n", "make", "-o", "out.txt", "echo made > out.txt"]
    for cmd in (stage, ["dvc", "repro", "-q"], ["dvc", "push", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "out.txt").unlink()
    (repo / RUNS).mkdir(parents=True)
    (repo / RUNS / "train.json").write_text("{}")  # a run of an earlier reproduction
    first = remote_cli(repo, env, "pull", "--or-compute")
    assert first.returncode == 0 and "pulled 1 of 1 outputs" in first.stderr, first.stderr
    assert set(PullRecord.read(repo).outs) == {"out.txt"}  # dvc.lock's; data.txt is no stage's
    assert not (repo / RUNS).exists()  # a new reproduction: no stage has run here yet
    # Already in the workspace and the cache: nothing comes from the remote this time.
    remote_cli(repo, env, "pull", "--or-compute")
    assert PullRecord.read(repo).outs == {}
    # A run that uses no remote leaves no record behind.
    subprocess.run(["dvc", "remote", "remove", "team"], cwd=repo, env=env, check=True)
    remote_cli(repo, env, "pull", "--or-compute")
    assert not (repo / PULL_RECORD).exists()


def test_an_option_the_check_cannot_apply_is_named(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, s3_server.reader)
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/x", s3_server.endpoint, env)
    cmd = ["dvc", "remote", "modify", "--local", "team", "credentialpath", str(tmp_path / "c")]
    subprocess.run(cmd, cwd=repo, env=env, check=True)
    done = remote_cli(repo, env, "check")
    assert "the check does not apply credentialpath; leaving it to dvc pull" in done.stderr


def test_the_remotes_profile_is_honoured(tmp_path: Path, s3_server: S3Server) -> None:
    env = env_with(tmp_path, {})
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/x", s3_server.endpoint, env)
    cmd = ["dvc", "remote", "modify", "--local", "team", "profile", "team-reader"]
    subprocess.run(cmd, cwd=repo, env=env, check=True)
    line = refused(repo, env)
    assert "team-reader" in line and "profile" in line
    keys = s3_server.reader
    (tmp_path / "no-aws-files").write_text(
        "[profile team-reader]\n"
        f"aws_access_key_id = {keys['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {keys['AWS_SECRET_ACCESS_KEY']}\n"
    )
    done = remote_cli(repo, env, "check")
    assert done.returncode == 0 and "can be read" in done.stderr, done.stderr


def test_the_check_lists_the_folder_with_the_session_token(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """The remote's own keys and session token are the ones sent (moto refuses a session token
    it did not issue, as S3 does)."""
    env = env_with(tmp_path, {})
    repo = make_repo(tmp_path / "repo", f"s3://{s3_server.bucket}/x", s3_server.endpoint, env)
    keys = s3_server.reader
    for option, value in (
        ("access_key_id", keys["AWS_ACCESS_KEY_ID"]),
        ("secret_access_key", keys["AWS_SECRET_ACCESS_KEY"]),
    ):
        cmd = ["dvc", "remote", "modify", "--local", "team", option, value]
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    assert remote_cli(repo, env, "check").returncode == 0
    cmd = ["dvc", "remote", "modify", "--local", "team", "session_token", "not-a-token"]
    subprocess.run(cmd, cwd=repo, env=env, check=True)
    done = remote_cli(repo, env, "check")
    assert "credentials refused" in done.stderr, done.stderr
