r"""Compile the production programs for a named TPU topology on this host (no TPU needed) and
report per-chip memory, collectives and a roofline time estimate.

    pip install "editmgt-jax[tpu]"     # the TPU compiler (libtpu), as jax[tpu]
    python -m launch.aot --config configs/editmgt_1b.py --topology v5e:2x4 --job train \
        --config.mesh.ici_parallelism=1,8,1
    python -m launch.aot --config configs/smoke.py --topology v5e:2x2 --job all
    python -m launch.aot --config configs/editmgt_1b.py --topology v5e:4x4 --plan

Jobs: `train` (launch.train's step), `edit` (the sampler loop at pipeline.resolution),
`pipeline` (VQ encode/decode and the text encoder at the edit batch), `tokenize` (VQ encode, as
launch.tokenize_shards runs it, and the text encoder at the train batch), `all`. `--plan` searches mesh splits, remat policies and
per-chip batches for the train step (editmgt_jax/aot/plan.py) and prints the overrides.

Prints one JSON object per compiled program on stdout, a table on stderr. Exit status: 0 when
everything fits, 1 when a program does not fit a chip's HBM (the message names it and what to
change), 2 on a bad flag, an unknown topology or a mesh that does not divide the chips.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from editmgt_jax.aot import topologies

topologies.prepare_environment()  # before JAX starts a backend: compile-only, no local TPU

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from ml_collections.config_flags import config_flags as _config_flags_impl  # noqa: E402

from launch import cli  # noqa: E402

FLAGS = flags.FLAGS
JOBS = ("train", "edit", "pipeline", "tokenize", "all")


class _CompletingParser(_config_flags_impl.ConfigFileFlagParser):
    """Loads the config file, then fills the sections the programs need and the file lacks
    (`programs.complete_config`) before `--config.x=` overrides apply, so an override of a
    filled-in field (`--config.train.batch_size` on configs/editmgt_1b.py) works and an unknown
    one still fails (the config is locked)."""

    def parse(self, path):
        from editmgt_jax.aot import programs

        config = super().parse(path)
        if isinstance(config, _config_flags_impl._ErrorConfig):  # a missing file
            return config
        return programs.complete_config(config)


def define_flags() -> None:
    """Defines the flags (only when run as a script)."""

    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    FLAGS["config"].parser = _CompletingParser(name="config", lock_config=True)
    flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:2x4, v5e:1x1, v5p:2x2x1.")
    flags.DEFINE_enum("job", "train", JOBS, "Which programs to compile.")
    flags.DEFINE_bool("plan", False, "Search mesh / remat / batch for the train step.")
    flags.DEFINE_integer("edit_batch", 1, "Edits per sampler call (job edit / pipeline).")
    flags.DEFINE_integer(
        "edit_steps", None, "Sampler steps (job edit); default: the config's pipeline.steps."
    )
    flags.DEFINE_integer("plan_compile_top", 3, "--plan: compile at most this many candidates.")
    flags.DEFINE_integer("plan_max_batch", 64, "--plan: largest per-chip batch considered.")
    flags.DEFINE_string(
        "dump_hlo", None, "Folder to write each compiled program's HLO text into (for reading)."
    )
    flags.mark_flags_as_required(["config", "topology"])


def _fail(message: str, code: int) -> None:
    print(f"launch.aot: {message}", file=sys.stderr)
    sys.exit(code)


def program_record(
    program, compiled, compile_s: float, topology, job: str, hlo: str
) -> dict[str, Any]:
    """The JSON record of one compiled program (see the module docstring)."""
    from editmgt_jax.aot import report

    memory = report.memory_bytes(compiled)
    trips = program.info.get("steps", 1) if program.name == "edit" else 1
    colls = report.collectives(hlo, unknown_trip_count=trips)
    devices = topology.devices
    flops = report.model_flops(program.name, program.info)
    flops_source = "ours"
    if flops is None:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float((cost or {}).get("flops", 0.0)) * devices  # per device -> whole program
        flops_source = "xla_cost_analysis"
    per_device = report.hardware_flops(program.name, program.info, flops) / devices
    traffic = report.hbm_traffic_bytes(program.name, program.info, memory, devices)
    coll_bytes = sum(c["bytes"] for c in colls.values())
    roof = report.roofline(topology, per_device, traffic, coll_bytes)
    hbm = topology.hbm_bytes_per_device
    record = dict(
        job=job,
        program=program.name,
        topology=topology.name,
        chips=topology.chips,
        devices=devices,
        device_kind=topology.chip.device_kind,
        mesh={k: int(v) for k, v in program.mesh.shape.items()},
        fits=report.fits(memory, hbm),
        hbm_bytes_per_chip=topology.chip.hbm_bytes,
        hbm_bytes_per_device=hbm,
        bytes_per_chip=memory,
        collectives=colls,
        pallas_kernels=report.pallas_kernels(hlo),
        model_flops=flops,
        flops_source=flops_source,
        hbm_traffic_bytes_per_device=traffic,
        **roof,
        compile_s=round(compile_s, 2),
        **{k: v for k, v in program.info.items() if k != "transformer"},
    )
    if program.name == "train":
        ideal = flops / (topology.peak_flops_per_device * devices)
        record["estimated_mfu"] = round(ideal / roof["estimated_step_s"], 4)
    return record


def compile_records(
    config, topology, devices, job: str, edit_batch: int, edit_steps: int | None = None
) -> list[dict]:
    from editmgt_jax.aot import programs

    jobs = programs.JOBS if job == "all" else (job,)
    records = []
    for name in jobs:
        for program in programs.build(name, config, devices, edit_batch, edit_steps):
            record = compile_record(program, topology, name)
            print(json.dumps(record), flush=True)
            records.append(record)
    return records


def compile_record(program, topology, job: str) -> dict:
    """Compiles `program`; its record, or `oom_record` when the TPU compiler refuses it for
    memory (RESOURCE_EXHAUSTED), so a plan or a job list goes on past it."""
    from editmgt_jax.aot import programs

    start = time.perf_counter()
    try:
        compiled, _, seconds = programs.lower_and_compile(program)
    except Exception as error:  # the TPU compiler refuses what cannot fit its HBM
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return oom_record(program, topology, job, error, time.perf_counter() - start)
    hlo = compiled.as_text()  # megabytes for the 1B step: printed once, read by the report
    if FLAGS.dump_hlo:
        from editmgt_jax.atomic import atomic_path

        name = f"{job}_{program.name}_{topology.name.replace(':', '_')}.hlo.txt"
        with atomic_path(os.path.join(FLAGS.dump_hlo, name)) as tmp, open(tmp, "w") as f:
            f.write(hlo)
    return program_record(program, compiled, seconds, topology, job, hlo)


def oom_record(program, topology, job: str, error: Exception, seconds: float) -> dict:
    """The record of a program the compiler rejected for memory (no byte counts: its message)."""
    message = str(error).split("\n")[0]
    return dict(
        job=job,
        program=program.name,
        topology=topology.name,
        chips=topology.chips,
        devices=topology.devices,
        device_kind=topology.chip.device_kind,
        mesh={k: int(v) for k, v in program.mesh.shape.items()},
        fits=False,
        hbm_bytes_per_chip=topology.chip.hbm_bytes,
        hbm_bytes_per_device=topology.hbm_bytes_per_device,
        error=message[:500],
        compile_s=round(seconds, 2),
        **{k: v for k, v in program.info.items() if k != "transformer"},
    )


def table(records: list[dict]) -> str:
    gb = lambda b: f"{b / 1e9:.2f}"
    head = f"{'program':<12} {'mesh':<9} {'fits':<5} {'args GB':>8} {'temp GB':>8} "
    head += f"{'peak GB':>8} {'HBM GB':>7} {'step s':>9} {'bound':<10} {'MFU':>5} {'compile s':>9}"
    rows = [head]
    for r in records:
        m, b = r["mesh"], r.get("bytes_per_chip")
        if b is None:
            rows.append(f"{r['program']:<12} does not fit: {r['error'][:90]}")
            continue
        mesh = f"{m['data']}x{m['fsdp']}x{m['tensor']}"
        mfu = f"{r['estimated_mfu']:.2f}" if "estimated_mfu" in r else "-"
        rows.append(
            f"{r['program']:<12} {mesh:<9} {str(r['fits']):<5} {gb(b['arguments']):>8} "
            f"{gb(b['temporaries']):>8} {gb(b['peak']):>8} {gb(r['hbm_bytes_per_device']):>7} "
            f"{r['estimated_step_s']:>9.4f} {r['bound']:<10} {mfu:>5} {r['compile_s']:>9.1f}"
        )
    return "\n".join(rows)


def _plan_overrides(chosen, config) -> list[str]:
    """The pick's overrides, keeping the config's examples per optimizer update."""
    accumulation = int(config.optim.get("accumulation_steps", 1))
    update = int(config.train.batch_size) * accumulation
    return chosen.overrides(update, accumulation)


def run_plan(config, topology, devices) -> dict:
    """--plan: the planner's choice as a JSON record (and the overrides on stderr)."""
    from editmgt_jax.aot import plan, programs

    cfg = programs.transformer_config(config)
    shape = programs.plan_shape(config, devices)

    def compile_fn(cand: plan.Candidate) -> dict:
        trial = config.copy_and_resolve_references()
        with trial.unlocked():
            trial.mesh.ici_parallelism = cand.mesh
            trial.model.remat_policy = cand.remat_policy
            trial.train.batch_size = cand.batch_per_chip * cand.data * cand.fsdp
        (program,) = programs.build("train", trial, devices)
        record = compile_record(program, topology, "plan")
        record["estimated_memory_bytes"] = plan.estimate(cand, shape, topology)["memory"]
        print(json.dumps(record), flush=True)
        return record

    result = plan.plan(
        topology,
        shape,
        programs.remat_policies(),
        cfg.num_attention_heads,
        compile_fn,
        max_batch_per_chip=FLAGS.plan_max_batch,
        compile_top=FLAGS.plan_compile_top,
    )
    chosen = result["chosen"]
    summary = dict(
        plan=True,
        topology=topology.name,
        candidates_fitting_estimate=result["ranked"],
        tried=result["tried"],
        correction=result["correction"],
        chosen=None if chosen is None else dict(chosen.__dict__),
        overrides=None if chosen is None else _plan_overrides(chosen, config),
        estimated_step_s=None if chosen is None else result["record"]["estimated_step_s"],
        # The model's growth per example from the compiled pick's bytes: an estimate, not compiled.
        largest_batch_per_chip_estimated=None
        if chosen is None
        else max(
            chosen.batch_per_chip,
            plan.largest_batch(chosen, shape, topology, plan.measured_bytes(result["record"])),
        ),
    )
    print(json.dumps(summary), flush=True)
    if chosen is None:
        _fail(
            f"no layout of the {result['ranked']} that fit by the estimate fits {topology.name} "
            "by the compiler; try a larger topology or a smaller per-chip batch",
            1,
        )
    print("Fastest layout that fits:\n  " + " \\\n  ".join(summary["overrides"]), file=sys.stderr)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        topology = topologies.parse_topology(FLAGS.topology)
    except topologies.TopologyError as error:
        _fail(str(error), 2)
    from editmgt_jax.aot import programs
    from editmgt_jax.training.config_from_bundle import resolve_config

    try:  # placeholders (configs/editmgt_crispedit.py) from init_from, else the release's
        config = programs.complete_config(resolve_config(FLAGS.config))
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error), 2)
    try:
        devices = topologies.topology_devices(topology)
    except topologies.TopologyError as error:
        _fail(str(error), 2)
    from editmgt_jax import sharding

    if not FLAGS.plan:
        try:  # the mesh against the slice before any compile
            sharding.resolve_parallelism(
                config.mesh.ici_parallelism, len(devices), "mesh.ici_parallelism"
            )
        except ValueError as error:
            _fail(f"{error} of {topology.name} ({topology.chips} chips)", 2)
    start = time.perf_counter()
    if FLAGS.plan:
        run_plan(config, topology, devices)
        return
    try:
        records = compile_records(
            config, topology, devices, FLAGS.job, FLAGS.edit_batch, FLAGS.edit_steps
        )
    except ValueError as error:  # e.g. a batch the mesh does not divide
        _fail(str(error), 2)
    print(table(records), file=sys.stderr)
    print(f"{len(records)} program(s) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    too_big = [r for r in records if not r["fits"]]
    if too_big:
        lines = [
            f"{r['program']} needs "
            + (
                f"{(r['bytes_per_chip']['peak'] + r['bytes_per_chip']['code']) / 1e9:.2f} GB"
                if "bytes_per_chip" in r
                else f"more ({r['error'][:200]})"
            )
            + f" per device, {topology.name} has {r['hbm_bytes_per_device'] / 1e9:.2f} GB"
            for r in too_big
        ]
        _fail(
            "does not fit: "
            + "; ".join(lines)
            + ". Change: a larger topology, more fsdp/tensor (--config.mesh.ici_parallelism), "
            "remat (--config.model.remat_policy=full), bfloat16 (--config.model.dtype), or a "
            "smaller batch (--config.train.batch_size / --edit_batch); --plan searches these.",
            1,
        )


def run():
    """The console-script entry (like the other launch scripts)."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
