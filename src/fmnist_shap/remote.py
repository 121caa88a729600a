"""The shared DVC remote: check it answers, then pull, so that a teammate or CI downloads what
another machine computed instead of recomputing it.

    python -m fmnist_shap.remote check   one line: the remote, and whether it can be read
    python -m fmnist_shap.remote pull    check, then `dvc pull --allow-missing`; exit 2 with one
                                         line when the remote cannot be read
    python -m fmnist_shap.remote pull --or-compute
                                         the same, but a missing or unreadable remote is one line
                                         and exit 0 (`make repro` then computes everything here)
    python -m fmnist_shap.remote push    check, refuse a corrupted cache, then `dvc push`; a push
                                         cut off midway is one line, and rerunning finishes it

The check runs before anything is downloaded and takes seconds, not DVC's minutes of retries:
a remote that does not answer, refused credentials, a missing bucket or folder each give one
line naming the remote and the fix, and the workspace is left as it was.

S3 and S3-compatible stores (MinIO, Ceph, R2, …): credentials come from the environment
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, or an AWS profile), never from git; the
endpoint of a non-AWS store is the remote's `endpointurl`; the remote's `profile`,
`session_token`, `use_ssl` and `ssl_verify` are honoured by the check too.

`pull` starts a reproduction (`make repro`, `make pull`): it clears the stages' run records
(`environment.RUNS`) and rewrites the pull record, `.dvc/tmp/pulled.json` (not tracked): the
outputs whose bytes came from the remote this time, or why none did. `make verify` and the PR
report read both to say how each stage got its outputs (`fmnist_shap.review.provenance`).
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fmnist_shap.artifacts import write_json
from fmnist_shap.environment import RUNS
from fmnist_shap.errors import UserError, run_cli

PULL_RECORD = Path(".dvc/tmp/pulled.json")
DVC = (sys.executable, "-m", "dvc")  # this environment's dvc, whatever PATH holds
TIMEOUT_S = 5  # connect and read timeout of the check; one attempt, no retries


@dataclass(frozen=True)
class Remote:
    """The default DVC remote as DVC's merged config (repo, local, global, system) names it."""

    name: str
    url: str
    options: dict

    def describe(self) -> str:
        return f"DVC remote '{self.name}' ({self.url})"


def default_remote(repo: Path) -> Remote | None:
    """The default remote, or None when none is configured."""
    from dvc.config import Config

    config = Config(dvc_dir=repo / ".dvc")
    name = config["core"].get("remote")
    if not name:
        return None
    if name not in config["remote"]:
        raise UserError(
            f"core.remote is '{name}' but no remote of that name is configured; "
            f"`dvc remote add -d {name} <url>` or `dvc remote default --unset`"
        )
    options = dict(config["remote"][name])
    url = options.pop("url")
    if "://" not in url and not Path(url).is_absolute():
        # DVC resolves a relative path against the folder of the config file that set it.
        url = str((repo / ".dvc" / url).resolve())
    return Remote(name, url, options)


# Options of an S3 remote the check applies as DVC does; any other option that decides how to
# reach or sign in to the store is named, and the check left to `dvc pull`.
CHECKED_OPTIONS = {
    "endpointurl",
    "region",
    "profile",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "use_ssl",
    "ssl_verify",
}
UNCHECKED_OPTIONS = {"credentialpath", "configpath", "role_arn", "role_session_name", "sse"}


def _bucket_and_folder(url: str) -> tuple[str, str]:
    bucket, _, folder = url.removeprefix("s3://").partition("/")
    return bucket, folder.strip("/")


def _s3_client(remote: Remote):
    import boto3
    from botocore.config import Config

    options = remote.options
    keys = {}
    if options.get("access_key_id"):  # the remote's own keys; else the environment's or profile's
        keys = {
            "aws_access_key_id": options["access_key_id"],
            "aws_secret_access_key": options.get("secret_access_key"),
            "aws_session_token": options.get("session_token"),
        }
    session = boto3.session.Session(profile_name=options.get("profile"), **keys)
    return session.client(
        "s3",
        endpoint_url=options.get("endpointurl"),
        region_name=options.get("region") or session.region_name or "us-east-1",
        use_ssl=options.get("use_ssl", True),
        verify=options.get("ssl_verify", True),
        config=Config(
            connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"total_max_attempts": 1}
        ),
    )


def _s3_problem(remote: Remote) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

    where = remote.describe()
    bucket, folder = _bucket_and_folder(remote.url)
    try:
        client = _s3_client(remote)
        # The folder, not just the bucket: what `dvc pull` lists, with the same permission
        # (s3:ListBucket, which a policy may limit to the folder).
        client.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/" if folder else "", MaxKeys=1)
    except ProfileNotFound as error:
        return f"{where}: {error}; fix the remote's profile (`dvc remote modify --local {remote.name} profile <name>`) or ~/.aws/config"
    except NoCredentialsError:
        return (
            f"{where}: no credentials; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(read-only keys are enough to pull) or set AWS_PROFILE"
        )
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return (
                f"{where}: bucket '{bucket}' does not exist; create it, or fix the url with "
                f"`dvc remote modify {remote.name} url s3://<bucket>/<path>`"
            )
        if code in (
            "403",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "ExpiredToken",
            "InvalidToken",
        ):
            return (
                f"{where}: credentials refused ({code}); check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, AWS_SESSION_TOKEN) and that they may "
                f"list s3://{bucket}/{folder}"
            )
        return f"{where}: {code or error}; check the remote's settings (`dvc remote list`)"
    except BotoCoreError as error:
        target = remote.options.get("endpointurl") or "AWS S3"
        return (
            f"{where}: {target} does not answer ({type(error).__name__}); check the endpoint "
            f"(`dvc remote modify --local {remote.name} endpointurl <url>`) and the network"
        )
    return None


def problem(remote: Remote) -> str | None:
    """Why `remote` cannot be read, in one line, or None when it can (or cannot be checked
    here: a scheme other than a folder or S3 is left to DVC, and so is an S3 remote with an
    option the check does not apply, which is named on stderr)."""
    if remote.url.startswith("s3://"):
        unchecked = sorted(set(remote.options) & UNCHECKED_OPTIONS)
        if "session_token" in remote.options and "access_key_id" not in remote.options:
            unchecked.append("session_token without access_key_id")
        if unchecked:
            print(
                f"remote: {remote.describe()}: the check does not apply {', '.join(unchecked)}; "
                "leaving it to dvc pull",
                file=sys.stderr,
            )
            return None
        return _s3_problem(remote)
    if "://" not in remote.url and not Path(remote.url).is_dir():
        return (
            f"{remote.describe()}: no such folder; `dvc push` from a clone that has the outputs "
            f"creates it, or point the remote at shared storage (docs/environment.md: the shared remote)"
        )
    return None


def lock_outputs(repo: Path) -> dict[str, str]:
    """Every output's md5 in the workspace's dvc.lock, by path."""
    lock_file = repo / "dvc.lock"
    if not lock_file.is_file():
        return {}
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    return {
        out["path"]: out["md5"]
        for stage in lock.get("stages", {}).values()
        for out in stage.get("outs", [])
    }


@dataclass(frozen=True)
class PullRecord:
    """What the last `make repro` / `make pull` got from the shared remote."""

    remote: str | None = None  # the remote's description; None: none was configured
    problem: str | None = None  # why nothing could be pulled, or None
    outs: dict[str, str] = field(default_factory=dict)  # path → md5, bytes from the remote

    def write(self, repo: Path) -> None:
        if self.remote is None:  # a run that used no remote leaves no record
            (repo / PULL_RECORD).unlink(missing_ok=True)
            return
        write_json(
            repo / PULL_RECORD, {"remote": self.remote, "problem": self.problem, "outs": self.outs}
        )

    @classmethod
    def read(cls, repo: Path) -> "PullRecord":
        record = repo / PULL_RECORD
        if not record.is_file():
            return cls()
        data = json.loads(record.read_text(encoding="utf-8"))
        return cls(data.get("remote"), data.get("problem"), data.get("outs", {}))

    def text(self) -> str:
        """One line for the PR report: where the outputs came from."""
        if self.remote is None:
            return "no shared remote configured: everything missing was computed here"
        if self.problem is not None:
            return f"the shared remote could not be read ({self.problem}): computed here"
        return f"{len(self.outs)} outputs pulled from {self.remote}"


def start_reproduction(repo: Path, record: PullRecord) -> None:
    """A new reproduction: no stage has run here yet, and `record` says what was pulled."""
    shutil.rmtree(repo / RUNS, ignore_errors=True)
    record.write(repo)


def cache_file(repo: Path, md5: str) -> Path:
    """Where DVC's local cache keeps the object named `md5` (a folder's listing: `….dir`)."""
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def in_cache(repo: Path, md5: str) -> bool:
    """Whether DVC's local cache already holds an object (a folder: its listing and files)."""
    path = cache_file(repo, md5)
    if not path.is_file():
        return False
    if not md5.endswith(".dir"):
        return True
    listing = json.loads(path.read_text(encoding="utf-8"))
    return all(cache_file(repo, e["md5"]).is_file() for e in listing)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tracked_data(repo: Path) -> dict[str, str]:
    """The outputs of the .dvc files git tracks (data/raw.dvc): path → md5."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.dvc"], cwd=repo, capture_output=True, check=False
    )
    found = {}
    for name in filter(None, listed.stdout.decode().split("\0")):
        document = yaml.safe_load((repo / name).read_text(encoding="utf-8")) or {}
        for out in document.get("outs", []):
            found[(Path(name).parent / out["path"]).as_posix()] = out["md5"]
    return found


def objects_of(repo: Path, md5: str) -> list[str]:
    """The cache objects an output of dvc.lock is made of: its own, and for a folder those its
    listing (when the cache holds a sound one) names."""
    listing = cache_file(repo, md5)
    if md5.endswith(".dir") and listing.is_file() and _md5(listing) == md5.removesuffix(".dir"):
        return [md5, *(entry["md5"] for entry in json.loads(listing.read_text(encoding="utf-8")))]
    return [md5]


def corrupted_outputs(repo: Path) -> list[str]:
    """dvc.lock's outputs and the data .dvc files track whose copy in DVC's local cache does not
    hash to its name (a flipped
    bit, a truncated write, an edited file), as "PATH (cache file CACHE)". Objects absent from
    the cache are not corrupted (DVC says "not in cache" of those)."""
    found = []
    for path, md5 in (lock_outputs(repo) | tracked_data(repo)).items():
        for oid in objects_of(repo, md5):
            file = cache_file(repo, oid)
            if file.is_file() and _md5(file) != oid.removesuffix(".dir"):
                found.append(f"{path} (cache file {file.relative_to(repo)})")
                break
    return found


def require_sound_cache(repo: Path) -> None:
    """One line naming every corrupted cached output, and the fix."""
    if damaged := corrupted_outputs(repo):
        raise UserError(
            f"DVC's cache copy of {', '.join(damaged)} is corrupted: its bytes do not hash to "
            "its name; `dvc repro` recomputes it (DVC drops the damaged file), or `dvc pull` "
            "downloads it"
        )


class _Said(logging.Handler):
    """DVC's log lines of `level` and above during a call: the reason behind its exception."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        line = record.getMessage().strip()
        line = f"{line} ({cause})" if cause is not None else line
        self.lines.append(" ".join(line.split()))  # one line, whatever DVC's message holds


@contextmanager
def _dvc_call(remote: Remote, what: str, level: int = logging.ERROR) -> Iterator[_Said]:
    """Run a DVC call quietly (its log lines collected, not printed: DVC logs one error per
    object it could not transfer); its failure becomes one line: the remote, `what`, and DVC's
    own reason (its first error, how many more, and the exception)."""
    from dvc.exceptions import DvcException

    said = _Said(level)
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    printing = [logger.handlers[:] for logger in loggers]
    for logger in loggers:
        logger.handlers = [said]
    try:
        yield said
    except Exception as error:  # DVC's own errors, and what its storage layer raises (OSError, …)
        text = str(error) if isinstance(error, DvcException) else f"{type(error).__name__}: {error}"
        errors = [line for line in said.lines if not line.startswith("Some of the cache")]
        reasons = list(dict.fromkeys([*errors, " ".join(text.split())]))
        if len(reasons) > 2:
            reasons = [reasons[0], f"{len(reasons) - 2} more like it", reasons[-1]]
        raise UserError(f"{remote.describe()}: {what} failed: {'; '.join(reasons)}") from None
    finally:
        for logger, handlers in zip(loggers, printing, strict=True):
            logger.handlers = handlers


def pull(repo: Path, remote: Remote) -> dict[str, str]:
    """`dvc pull --allow-missing`; returns the outputs whose bytes it brought from the remote
    (checked out now, with the hash dvc.lock names, and not in the local cache before).
    Raises UserError with DVC's own error line when the pull fails."""
    from dvc.repo import Repo

    wanted = lock_outputs(repo)
    cached_before = {path for path, md5 in wanted.items() if in_cache(repo, md5)}
    with _dvc_call(remote, "dvc pull"), Repo(str(repo)) as dvc_repo:
        result = dvc_repo.pull(allow_missing=True)
    # Paths of what checkout wrote, relative to the current folder (folders end with "/").
    touched = [
        Path(os.path.relpath(Path(p).resolve(), repo)).as_posix()
        for key in ("added", "modified")
        for p in result.get(key, [])
    ]
    return {
        path: md5
        for path, md5 in wanted.items()
        if path not in cached_before
        and in_cache(repo, md5)
        and any(t == path or t.startswith(path + "/") for t in touched)
    }


def push(repo: Path, remote: Remote) -> int:
    """`dvc push` of what dvc.lock names, after checking the remote answers and DVC's cache is
    sound; returns how many files it uploaded. A push that stops midway (the remote or the
    network dies) is one line: S3 shows an object only once it is complete, and DVC uploads
    only what is missing, so rerunning it finishes the job."""
    from dvc.repo import Repo

    if (reason := problem(remote)) is not None:
        raise UserError(reason)
    require_sound_cache(repo)
    again = "; what was uploaded stays: rerun `make push` once the remote answers"
    try:
        with _dvc_call(remote, "dvc push", logging.WARNING) as said, Repo(str(repo)) as dvc_repo:
            uploaded = dvc_repo.push()
    except UserError as error:
        raise UserError(f"{error}{again}") from None
    if missing := [line for line in said.lines if line.startswith("Some of the cache")]:
        names = " ".join(missing[0].split("\n")[1:])
        raise UserError(
            f"{remote.describe()}: pushed {uploaded} files but not what DVC's cache lacks "
            f"({names}); `dvc repro` or `make pull` brings it back, then `make push`"
        )
    return uploaded


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("check", "pull", "push"))
    parser.add_argument(
        "--or-compute",
        action="store_true",
        help="no remote or an unreadable one is a note, not an error (make repro)",
    )
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    remote = default_remote(repo)
    pulling = args.action == "pull"
    if args.action == "push":
        if remote is None:
            raise UserError(
                "no DVC remote configured to push to (docs/environment.md: the shared remote)"
            )
        uploaded = push(repo, remote)
        if uploaded:
            print(f"remote: {uploaded} files uploaded to {remote.describe()}", file=sys.stderr)
        else:
            print(f"remote: {remote.describe()} is up to date: nothing to upload", file=sys.stderr)
        return
    if remote is None:
        note = "no DVC remote configured (docs/environment.md: the shared remote)"
        if pulling and not args.or_compute:
            raise UserError(f"{note}; `dvc remote add -d <name> s3://<bucket>/<path>`")
        if pulling:
            start_reproduction(repo, PullRecord())
        print(f"remote: {note}; computing everything here", file=sys.stderr)
        return
    reason = problem(remote)
    if reason is None and not pulling:
        print(f"remote: {remote.describe()} can be read", file=sys.stderr)
        return
    if reason is None:
        try:
            pulled = pull(repo, remote)
        except UserError as error:
            if not args.or_compute:
                raise
            reason = str(error)
    if reason is not None:
        if not args.or_compute:
            raise UserError(reason)
        if pulling:
            start_reproduction(repo, PullRecord(remote.describe(), reason))
        print(f"remote: {reason}; computing everything here", file=sys.stderr)
        return
    start_reproduction(repo, PullRecord(remote.describe(), None, pulled))
    total = len(lock_outputs(repo))
    print(
        f"remote: pulled {len(pulled)} of {total} outputs of dvc.lock from {remote.describe()} "
        "(the rest: in git, in DVC's cache, or computed next)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_cli(main)
