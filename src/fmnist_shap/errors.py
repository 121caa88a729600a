"""One error type for bad input, and the CLI wrapper that turns it into a one-line message."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix."""


def run_cli(
    main: Callable[[list[str]], None], argv: list[str] | None = None, stage: str | None = None
) -> None:
    """Run a CLI's main; a UserError exits with status 2 and one line on stderr, no traceback.

    A DVC stage names itself (`stage`): when its main succeeds, the workspace's run record says
    it ran here (`environment.record_run`)."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if stage is not None:
        from fmnist_shap.environment import record_run

        record_run(stage)
