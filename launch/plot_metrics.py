r"""Plots training curves from a `metrics.jsonl` (launch.train or launch.train_vq) into one PNG.

    python -m launch.plot_metrics --metrics workdirs/default/metrics.jsonl \
        --keys loss,masked_accuracy --out docs/default_model/training_curves.png

One chart per key, stacked; lines with a `split` field other than `--split` are skipped.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from editmgt_jax.editing import images as imio
from editmgt_jax.evaluation.figure import line_plot
from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("metrics", None, "metrics.jsonl path.")
    flags.DEFINE_list("keys", ["loss"], "Metric names, one chart each.")
    flags.DEFINE_string("split", "train", "Keep lines whose 'split' is this (or that have none).")
    flags.DEFINE_string("out", None, "Output PNG.")
    flags.DEFINE_string("title", "", "Prefix of each chart's title.")
    flags.mark_flags_as_required(["metrics", "out"])


def read_curves(path: str, keys: list[str], split: str) -> dict[str, tuple[list, list]]:
    """{key: (steps, values)} from a metrics.jsonl; later lines for a step replace earlier ones
    (a resumed run logs some steps again)."""
    by_step: dict[str, dict[int, float]] = {k: {} for k in keys}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number} is not JSON: {e}") from e
            if record.get("split", split) != split or "step" not in record:
                continue
            for key in keys:
                if isinstance(record.get(key), int | float):
                    by_step[key][int(record["step"])] = float(record[key])
    missing = [k for k, v in by_step.items() if not v]
    if missing:
        raise ValueError(f"{path} has no values of {missing} (split {split!r})")
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_step.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    curves = read_curves(FLAGS.metrics, FLAGS.keys, FLAGS.split)
    charts = [
        line_plot({key: curve}, f"{FLAGS.title}{key} vs step".strip())
        for key, curve in curves.items()
    ]
    imio.save_image(FLAGS.out, np.concatenate(charts, axis=0))
    print(json.dumps({k: {"steps": len(v[0]), "last": v[1][-1]} for k, v in curves.items()}))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
