"""One error type for bad input, and the CLI wrapper that turns it into a one-line message."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix."""


def run_cli(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a UserError exits with status 2 and one line on stderr, no traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
