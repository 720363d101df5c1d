"""The console scripts' runner (pyproject.toml `[project.scripts]`, and `python -m launch.X`).

`run_main(main)` is `absl.app.run(main)`, except that a help request (`--help`, `-?`,
`--helpshort`, `--helpfull`, `--helpxml`) exits 0 after printing the usage, as command-line
tools do (absl exits 1), so `editmgt-edit --help && ...` works in scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app

HELP_FLAGS = ("--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull")
HELP_FLAGS += ("--helpxml", "-helpxml")


def asked_for_help(argv: list[str]) -> bool:
    """Whether a help flag comes before the first `--` (after it, arguments are not flags)."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    return any(arg.split("=")[0] in HELP_FLAGS for arg in args)


def run_main(main: Callable[[list[str]], object]) -> None:
    try:
        app.run(main)
    except SystemExit as exit_:
        if exit_.code == 1 and asked_for_help(sys.argv[1:]):
            raise SystemExit(0) from None
        raise
