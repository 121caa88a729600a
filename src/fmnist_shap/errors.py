"""One error type for bad input, and the CLI wrapper that turns it into a one-line message."""

import errno
import os
import sys
from collections.abc import Callable

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix."""


def run_cli(
    main: Callable[[list[str]], None], argv: list[str] | None = None, stage: str | None = None
) -> None:
    """Run a CLI's main; a UserError, or a full disk, exits with status 2 and one line on
    stderr, no traceback; Ctrl-C exits with 130 at once, its child processes killed.

    A DVC stage names itself (`stage`): when its main succeeds, the workspace's run record says
    it ran here (`environment.record_run`)."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        # Ctrl-C: every output written so far is whole (atomic writes), the rest were not
        # written. Exit now: the interpreter's shutdown would wait on Dask's threads for
        # seconds, and a pool's workers must not outlive this process.
        from fmnist_shap.processes import kill_children

        kill_children()
        print("error: interrupted; nothing was half-written: rerun the stage", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        where = error.filename or "an output"
        folder = os.path.dirname(str(where)) or "."
        print(
            f"error: {os.strerror(error.errno)} while writing {where}; free space there "
            f"(`df -h {folder}`) and rerun: nothing was half-written",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    if stage is not None:
        from fmnist_shap.environment import record_run

        record_run(stage)
