"""Run the `densekit` entry point in-process, as a user's shell would (typed errors become
messages and exit code 2 there, not in typer's CliRunner, which calls the app directly)."""

from __future__ import annotations

import sys


def run_cli(args: list[str]) -> int:
    """`densekit ARGS...` through `densekit.cli.main.main`; its exit code."""
    from densekit.cli.main import main

    old = sys.argv
    sys.argv = ["densekit", *args]
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0
