"""`python -m fmnist_shap.fetch data/raw`: obtain and verify the raw Fashion-MNIST files."""

import argparse
import sys
from pathlib import Path

from fmnist_shap.errors import run_cli
from fmnist_shap.raw import DEFAULT_MIRROR, OFFICIAL_URLS, fetch_raw
from fmnist_shap.remote import default_remote, problem


def remote_answers(repo: Path) -> bool:
    """Whether the default DVC remote can be read; says in one line why not (a remote that does
    not answer would otherwise hold `dvc pull` in minutes of retries)."""
    if not (repo / ".dvc").is_dir() or (remote := default_remote(repo)) is None:
        return False
    reason = problem(remote)
    if reason is not None:
        print(f"fetch: {reason}; using the other sources", file=sys.stderr)
    return reason is None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", default="data/raw")
    parser.add_argument("--mirror", default=str(DEFAULT_MIRROR), help="directory of the .gz files")
    parser.add_argument("--no-remote", action="store_true", help="do not try `dvc pull`")
    args = parser.parse_args(argv)
    use_remote = not args.no_remote and remote_answers(Path.cwd())
    origins = fetch_raw(Path(args.out_dir), args.mirror, OFFICIAL_URLS, use_remote)
    for name, origin in origins.items():
        print(f"fetch: {name} ← {origin}")


if __name__ == "__main__":
    run_cli(main)
