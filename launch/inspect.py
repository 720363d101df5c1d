"""Parameter count, training-state bytes and AOT-compiled memory of one transformer forward,
without allocating weights.

    python -m launch.inspect --config configs/editmgt_1b.py
    python -m launch.inspect --config configs/editmgt_1b.py --config.model.dtype=bfloat16 \
        --config.model.param_dtype=bfloat16 --config.inspect.grid=32
    python -m launch.inspect --config configs/editmgt_crispedit.py --nocompile
    python -m launch.inspect --config configs/editmgt_crispedit.py:lora --nocompile

Prints one JSON line: transformer_params; for training configs (with `train` and `optim`) the
bytes of the parameters, the trainable ones (LoRA adapters), the optimizer state, the EMA and
the frozen text encoder (`editmgt_jax.training.memory`); and (unless --nocompile) the compiled
forward's memory analysis in bytes for `config.inspect` (grid x grid tokens, batch, text length,
with/without source). A config that takes its architecture from `init_from` is resolved first.
"""

from __future__ import annotations

import json

import jax
from absl import app, flags
from ml_collections import config_flags

from editmgt_jax.models.transformer import TransformerConfig
from editmgt_jax.models.transformer_stats import count_params, forward_memory
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_COMPILE = flags.DEFINE_bool("compile", True, "AOT-compile one forward and report its memory.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from editmgt_jax.training.config_from_bundle import resolve_config

    try:
        config = resolve_config(_CONFIG.value)
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e)) from e
    cfg = TransformerConfig.from_dict(config.model)
    report = dict(
        transformer_params=count_params(cfg),
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        scan_layers=cfg.scan_layers,
    )
    if "train" in config and "optim" in config:
        from editmgt_jax.training.memory import training_bytes

        report.update(training_bytes(config))
    if _COMPILE.value:
        shape = config.inspect
        stats, seconds = forward_memory(
            cfg, shape.grid, shape.batch, shape.text_len, shape.with_source
        )
        report.update(
            grid=shape.grid,
            batch=shape.batch,
            text_len=shape.text_len,
            with_source=shape.with_source,
            backend=jax.default_backend(),
            compile_s=round(seconds, 2),
            memory=stats,
        )
    print(json.dumps(report))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
