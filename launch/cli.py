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
    """The `--checkpoint` bundle folder, the embedded default model when unset (a gs:// URL: its
    cached local copy, `paths.local_copy`); a UsageError naming it when it does not exist."""
    from editmgt_jax.assets import DEFAULT_MODEL

    folder = local_checkpoint(checkpoint) or DEFAULT_MODEL
    if not os.path.isdir(folder):
        raise app.UsageError(f"Checkpoint folder {folder!r} does not exist")
    return folder


def local_checkpoint(path: str | None) -> str | None:
    """`path`, or for a URL (gs://bucket/run/bundle) its cached local copy; a UsageError naming
    a URL that holds no bundle."""
    from editmgt_jax import paths

    if not path or not paths.is_url(path):
        return path
    if not paths.isfile(paths.join(path, "bundle.json")):
        raise app.UsageError(f"--checkpoint {path!r} holds no bundle.json")
    return paths.local_copy(path)


def quiet_backend_probe() -> None:
    """JAX logs, at INFO, each accelerator backend it tried and could not start ("Unable to
    initialize backend 'tpu' ...") on every CPU-only run: noise for a user, not news. Real
    failures on a TPU/GPU host still reach the log as warnings and errors."""
    import logging

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


DISTRIBUTED_FLAGS = ("distributed", "coordinator_address", "num_processes", "process_id")


def define_distributed_flags(module_name: str) -> None:
    """Defines --distributed, --coordinator_address, --num_processes, --process_id as key flags
    of `module_name` (the calling script's `__name__`, so its --help lists them); a second call
    (two such scripts imported in one process) leaves the first definitions."""
    if module_name == "__main__":  # `python -m launch.X`: absl files main's flags by argv[0]
        module_name = sys.argv[0]
    if "coordinator_address" in flags.FLAGS:
        for name in DISTRIBUTED_FLAGS:
            flags.FLAGS.register_key_flag_for_module(module_name, flags.FLAGS[name])
        return
    flags.DEFINE_bool(
        "distributed",
        False,
        "Call jax.distributed.initialize() (TPU pods, SLURM: it finds its peers by itself).",
        module_name=module_name,
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0.", module_name=module_name
    )
    flags.DEFINE_integer("num_processes", None, "Processes in the job.", module_name=module_name)
    flags.DEFINE_integer("process_id", None, "This process's index.", module_name=module_name)


def initialize_distributed() -> None:
    """Starts `jax.distributed` as the flags of `define_distributed_flags` say (or not at all).

    With --coordinator_address, --num_processes and --process_id must be given too; a UsageError
    names the one that is missing or out of range.
    """
    import jax

    values = flags.FLAGS
    if values.coordinator_address:
        count, index = values.num_processes, values.process_id
        if count is None or index is None:
            raise app.UsageError(
                f"--coordinator_address={values.coordinator_address} needs --num_processes and "
                f"--process_id (got {count} and {index})"
            )
        if not 0 <= index < count:
            raise app.UsageError(f"--process_id={index} is outside [0, --num_processes={count})")
        # Cross-process collectives for CPU devices (local multi-process runs and tests); it does
        # not affect TPU/GPU. Querying the backend here would initialise it too early.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=values.coordinator_address,
            num_processes=count,
            process_id=index,
        )
    elif values.distributed:
        jax.distributed.initialize()


def run_main(main: Callable[[list[str]], object]) -> None:
    """`app.run(main)`; call it after the flags are defined."""
    quiet_backend_probe()
    for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        app.run(main)
    except SystemExit as exit_:
        if exit_.code == 1 and asked_for_help(sys.argv[1:]):
            raise SystemExit(0) from None
        raise
