"""The console scripts' runner (pyproject.toml `[project.scripts]`, and `python -m launch.X`).

`run_main(main)` is `absl.app.run(main)`, except that a help request (`--help`, `-?`,
`--helpshort`, `--helpfull`, `--helpxml`) exits 0 after printing the usage, as command-line
tools do (absl exits 1), so `editmgt-edit --help && ...` works in scripts, and the short help
lists the script's own flags also when it runs as a console script (absl lists those of the
module it thinks is main: `sys.argv[0]`, the wrapper in bin/).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags

HELP_FLAGS = ("--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull")
HELP_FLAGS += ("--helpxml", "-helpxml")


def asked_for_help(argv: list[str]) -> bool:
    """Whether a help flag comes before the first `--` (after it, arguments are not flags)."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    return any(arg.split("=")[0] in HELP_FLAGS for arg in args)


def bundle_folder(checkpoint: str | None) -> str:
    """The `--checkpoint` bundle folder, the embedded default model when unset; a UsageError
    naming it when it does not exist."""
    from editmgt_jax.assets import DEFAULT_MODEL

    folder = checkpoint or DEFAULT_MODEL
    if not os.path.isdir(folder):
        raise app.UsageError(f"Checkpoint folder {folder!r} does not exist")
    return folder


def run_main(main: Callable[[list[str]], object]) -> None:
    """`app.run(main)`; call it after the flags are defined."""
    for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        app.run(main)
    except SystemExit as exit_:
        if exit_.code == 1 and asked_for_help(sys.argv[1:]):
            raise SystemExit(0) from None
        raise
