"""Parameter count and AOT-compiled memory of one transformer forward, without allocating weights.

    python -m launch.inspect --config configs/editmgt_1b.py
    python -m launch.inspect --config configs/editmgt_1b.py --config.model.dtype=bfloat16 \
        --config.model.param_dtype=bfloat16 --config.inspect.grid=32

Prints one JSON line: transformer_params, and (unless --nocompile) the compiled forward's memory
analysis in bytes for `config.inspect` (grid x grid tokens, batch, text length, with/without source).
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
    config = _CONFIG.value
    cfg = TransformerConfig.from_dict(config.model)
    report = dict(
        transformer_params=count_params(cfg),
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        scan_layers=cfg.scan_layers,
    )
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
