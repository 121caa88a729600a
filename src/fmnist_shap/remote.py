"""The shared DVC remote: check it answers, then pull, so that a teammate or CI downloads what
another machine computed instead of recomputing it.

    python -m fmnist_shap.remote check   one line: the remote, and whether it can be read
    python -m fmnist_shap.remote pull    check, then `dvc pull --allow-missing`; exit 2 with one
                                         line when the remote cannot be read
    python -m fmnist_shap.remote pull --or-compute
                                         the same, but a missing or unreadable remote is one line
                                         and exit 0 (`make repro` then computes everything here)

The check runs before anything is downloaded and takes seconds, not DVC's minutes of retries:
a remote that does not answer, refused credentials, a missing bucket or folder each give one
line naming the remote and the fix, and the workspace is left as it was.

S3 and S3-compatible stores (MinIO, Ceph, R2, …): credentials come from the environment
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, or an AWS profile), never from git; the
endpoint of a non-AWS store is the remote's `endpointurl`. What was pulled is recorded in
`.dvc/tmp/pulled.json` (not tracked), which the PR report reads to say which outputs came
from the remote.
"""

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmnist_shap.artifacts import write_json
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


def _s3_problem(remote: Remote) -> str | None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = remote.url.removeprefix("s3://").split("/")[0]
    endpoint = remote.options.get("endpointurl")
    session = boto3.session.Session(
        profile_name=remote.options.get("profile"),
        aws_access_key_id=remote.options.get("access_key_id"),
        aws_secret_access_key=remote.options.get("secret_access_key"),
    )
    client = session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=remote.options.get("region") or session.region_name or "us-east-1",
        config=Config(
            connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"total_max_attempts": 1}
        ),
    )
    where = remote.describe()
    try:
        client.head_bucket(Bucket=bucket)
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
        if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            return (
                f"{where}: credentials refused ({code}); check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that they may read bucket '{bucket}'"
            )
        return f"{where}: {code or error}; check the remote's settings (`dvc remote list`)"
    except BotoCoreError as error:
        target = endpoint or "AWS S3"
        return (
            f"{where}: {target} does not answer ({type(error).__name__}); check the endpoint "
            f"(`dvc remote modify --local {remote.name} endpointurl <url>`) and the network"
        )
    return None


def problem(remote: Remote) -> str | None:
    """Why `remote` cannot be read, in one line, or None when it can (or cannot be checked
    here: a scheme other than a folder or S3 is left to DVC)."""
    if remote.url.startswith("s3://"):
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


def pull(repo: Path, remote: Remote) -> dict[str, str]:
    """`dvc pull --allow-missing`; returns (and records) the outputs now in the workspace with
    the hash dvc.lock names — what the remote provided or the workspace already had."""
    done = subprocess.run(
        [*DVC, "pull", "--allow-missing", "--quiet"], cwd=repo, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{remote.describe()}: dvc pull failed: {last}")
    status = subprocess.run(
        [*DVC, "status", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    stale = json.loads(status.stdout or "{}")
    missing = {
        path
        for changes in stale.values()
        for change in changes
        if isinstance(change, dict)
        for path in change.get("changed outs", {})
    }
    pulled = {path: md5 for path, md5 in lock_outputs(repo).items() if path not in missing}
    lock_digest = hashlib.md5((repo / "dvc.lock").read_bytes()).hexdigest()
    write_json(
        repo / PULL_RECORD, {"remote": remote.name, "dvc_lock_md5": lock_digest, "outs": pulled}
    )
    return pulled


def read_pull_record(repo: Path) -> dict[str, str]:
    """Outputs the last `pull` brought, by path and md5 ({} if none was recorded)."""
    record = repo / PULL_RECORD
    if not record.is_file():
        return {}
    return json.loads(record.read_text(encoding="utf-8")).get("outs", {})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("check", "pull"))
    parser.add_argument(
        "--or-compute",
        action="store_true",
        help="no remote or an unreadable one is a note, not an error (make repro)",
    )
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    remote = default_remote(repo)
    if remote is None:
        note = "no DVC remote configured (docs/environment.md: the shared remote)"
        if args.or_compute or args.action == "check":
            print(f"remote: {note}; computing everything here", file=sys.stderr)
            return
        raise UserError(f"{note}; `dvc remote add -d <name> s3://<bucket>/<path>`")
    reason = problem(remote)
    if reason is not None:
        if args.or_compute:
            print(f"remote: {reason}; computing everything here", file=sys.stderr)
            return
        raise UserError(reason)
    if args.action == "check":
        print(f"remote: {remote.describe()} can be read", file=sys.stderr)
        return
    pulled = pull(repo, remote)
    total = len(lock_outputs(repo))
    print(
        f"remote: pulled {len(pulled)} of {total} outputs of dvc.lock from {remote.describe()}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_cli(main)
