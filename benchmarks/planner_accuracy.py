r"""How well the planner's analytic memory model predicts the TPU compiler.

    python -m launch.aot --config configs/editmgt_crispedit.py --topology v5e:2x4 \
        --job train > records.jsonl
    python -m benchmarks.planner_accuracy --config configs/editmgt_crispedit.py \
        --records records.jsonl [--records more.jsonl ...]

For every train-step record of `launch.aot` (and of its `--plan` compiles) in the files: the
layout it was compiled with (mesh, remat policy, per-chip batch, resolution, attention kernel),
the planner's estimate for that layout (`editmgt_jax.aot.plan.estimate`, the shape rebuilt from
`--config` at the record's resolution and attention kernel) and the compiler's peak + code bytes
per device, and the largest per-chip batch of that layout (the compile's bytes plus the model's
growth per example: an estimate). Prints one JSON line per record and a summary line (ratios measured /
estimated).
"""

from __future__ import annotations

from editmgt_jax.aot import topologies

topologies.prepare_environment()  # before JAX starts: compile-only TPU devices

import json  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS


def _layout(record: dict):
    from editmgt_jax.aot import plan

    mesh = record["mesh"]
    per_chip = record["batch"] // (mesh["data"] * mesh["fsdp"])
    return plan.Candidate(
        mesh["data"], mesh["fsdp"], mesh["tensor"], record["remat_policy"], per_chip
    )


def compare(config, records: list[dict]) -> list[dict]:
    """One comparison per train record (estimated vs compiler bytes per device)."""
    from editmgt_jax.aot import plan, programs

    shapes: dict[tuple, dict] = {}
    out = []
    for record in records:
        if record.get("program") != "train":
            continue
        topology = topologies.parse_topology(record["topology"])
        impl = record.get("attention_impl", "xla")
        key = (record["topology"], record["px"], impl)
        if key not in shapes:
            trial = config.copy_and_resolve_references()
            with trial.unlocked():
                trial.image_size = record["px"]
                trial.model.attention_impl = impl
            shapes[key] = programs.plan_shape(trial, topologies.topology_devices(topology))
        layout = _layout(record)
        estimated = plan.estimate(layout, shapes[key], topology)["memory"]
        measured = plan.measured_bytes(record)
        out.append(
            dict(
                topology=record["topology"],
                px=record["px"],
                attention_impl=impl,
                layout=layout.__dict__,
                fits=record["fits"],
                estimated_gb=round(estimated / 1e9, 2),
                measured_gb=None if measured is None else round(measured / 1e9, 2),
                refused=("bytes_per_chip" not in record),
                ratio=None if measured is None else round(measured / estimated, 2),
                # The model's growth per example from this compile: the layout's largest batch.
                largest_batch_per_chip_estimated=None
                if measured is None
                else plan.largest_batch(layout, shapes[key], topology, measured),
            )
        )
    return out


def main(argv):
    del argv
    from editmgt_jax.aot import programs
    from editmgt_jax.training.config_from_bundle import resolve_config

    config = programs.complete_config(resolve_config(FLAGS.config))
    records = []
    for path in FLAGS.records:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.startswith("{")]
    rows = compare(config, records)
    for row in rows:
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None and not r["refused"]]
    print(
        json.dumps(
            dict(
                summary=True,
                compared=len(ratios),
                ratio_min=min(ratios, default=None),
                ratio_max=max(ratios, default=None),
            )
        )
    )


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    flags.DEFINE_multi_string("records", [], "launch.aot JSON-lines files.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
