"""`python -m fmnist_shap.fetch data/raw`: obtain and verify the raw Fashion-MNIST files."""

import argparse
from pathlib import Path

from fmnist_shap.errors import run_cli
from fmnist_shap.raw import DEFAULT_MIRROR, OFFICIAL_URLS, fetch_raw


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", default="data/raw")
    parser.add_argument("--mirror", default=str(DEFAULT_MIRROR), help="directory of the .gz files")
    parser.add_argument("--no-remote", action="store_true", help="do not try `dvc pull`")
    args = parser.parse_args(argv)
    origins = fetch_raw(Path(args.out_dir), args.mirror, OFFICIAL_URLS, not args.no_remote)
    for name, origin in origins.items():
        print(f"fetch: {name} ← {origin}")


if __name__ == "__main__":
    run_cli(main)
