"""Training-step throughput, and the AOT memory of the 1B model's step on a mesh.

    python -m benchmarks.train_step                       # smoke and small_40m on this machine
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m benchmarks.train_step --aot_1b --mesh=1,8,1   # compile only, no allocation

One JSON line per configuration: examples/s, tokens/s, model TFLOP/s (from XLA's cost analysis
of the compiled step) and MFU against `--peak_tflops` (default: a dense float32 matmul measured on
this device, i.e. "what this chip reaches on a large GEMM").
"""

from __future__ import annotations

import importlib
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import common
from editmgt_jax import sharding
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.training.optimizer import make_optimizer
from editmgt_jax.training.step import StepOptions, jit_train_step, make_train_step
from editmgt_jax.training.train_state import TrainState, create_sharded_train_state

_CONFIGS = flags.DEFINE_list("configs", ["smoke:8:8", "small_40m:16:4"], "config:grid:batch")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed steps.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s for MFU (0: measure a GEMM).")
_AOT_1B = flags.DEFINE_bool("aot_1b", False, "AOT-compile the 1B step instead of timing.")
_MESH = flags.DEFINE_list("mesh", ["-1", "1", "1"], "data,fsdp,tensor for the step.")
_GRID_1B = flags.DEFINE_integer("grid_1b", 32, "Token grid for --aot_1b (32 = 512 px).")
_BATCH_1B = flags.DEFINE_integer("batch_1b", 8, "Global batch for --aot_1b.")

OPTIM = common.optim(warmup_steps=10)


def measured_peak_tflops(n: int = 2048) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e12


def _setup(cfg: TransformerConfig, grid: int, batch: int, text_len: int, mesh):
    model = Transformer(cfg)
    tx = make_optimizer(OPTIM, 1000)
    sample = example_inputs(cfg, batch=1, grid=(grid, grid), text_len=text_len)
    step = make_train_step(model, StepOptions(mask_id=cfg.mask_token_id))
    rng = np.random.default_rng(0)
    batch_arrays = dict(
        target_tokens=rng.integers(0, cfg.codebook_size, (batch, grid, grid)).astype(np.int32),
        source_tokens=rng.integers(0, cfg.codebook_size, (batch, grid, grid)).astype(np.int32),
        text_states=rng.standard_normal((batch, text_len, cfg.joint_attention_dim), np.float32),
        pooled=rng.standard_normal((batch, cfg.pooled_projection_dim), np.float32),
        micro_conds=np.tile(np.float32([512, 512, 0, 0, 6]), (batch, 1)),
    )
    uncond = (
        np.zeros((text_len, cfg.joint_attention_dim), np.float32),
        np.zeros((cfg.pooled_projection_dim,), np.float32),
    )
    return model, tx, sample, step, batch_arrays, uncond


def time_config(name: str, grid: int, batch: int, peak: float) -> dict:
    module = importlib.import_module(f"configs.{name}")
    cfg = TransformerConfig.from_dict(module.get_config().model).replace(dtype=_DTYPE.value)
    text_len = 32 if name == "smoke" else 64
    mesh = sharding.create_mesh([int(x) for x in _MESH.value])
    model, tx, sample, step, batch_arrays, uncond = _setup(cfg, grid, batch, text_len, mesh)
    state, shardings = create_sharded_train_state(model, tx, jax.random.key(0), sample, mesh)
    batch_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jit_train_step(step, shardings, batch_sh, rep)
    key = jax.random.key(1)
    with sharding.activation_sharding(mesh):
        start = time.perf_counter()
        compiled = jitted.lower(state, batch_arrays, *uncond, key).compile()
        compile_s = time.perf_counter() - start
        flops = float(compiled.cost_analysis().get("flops", 0.0))
        state, _ = compiled(state, batch_arrays, *uncond, key)
        jax.block_until_ready(state)
        times = []
        for _ in range(_RUNS.value):
            start = time.perf_counter()
            state, metrics = compiled(state, batch_arrays, *uncond, key)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    achieved = flops / median / 1e12
    return dict(
        benchmark="train_step",
        config=name,
        params=sum(x.size for x in jax.tree.leaves(state.params)),
        grid=grid,
        batch=batch,
        dtype=_DTYPE.value,
        devices=jax.device_count(),
        device=jax.devices()[0].device_kind,
        compile_s=round(compile_s, 2),
        median_step_s=round(median, 4),
        examples_per_s=round(batch / median, 2),
        tokens_per_s=round(batch * grid * grid / median, 1),
        model_tflops_per_step=round(flops / 1e12, 4),
        achieved_tflops=round(achieved, 4),
        peak_tflops=round(peak, 4),
        mfu=round(achieved / peak, 4) if peak else None,
    )


def aot_1b() -> dict:
    from configs import editmgt_1b

    cfg = TransformerConfig.from_dict(editmgt_1b.get_config("scan").model).replace(
        remat_policy="full", dtype=_DTYPE.value
    )
    grid, batch, text_len = _GRID_1B.value, _BATCH_1B.value, 256
    mesh = sharding.create_mesh([int(x) for x in _MESH.value])
    model, tx, sample, step, batch_arrays, uncond = _setup(cfg, grid, batch, text_len, mesh)

    def init(key):
        return TrainState.create(model.init(key, **sample)["params"], tx)

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.tree_shardings(abstract, mesh)
    structs = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.tree.map(lambda x: x, __import__("flax").linen.meta.unbox(abstract)),
        shardings,
    )
    batch_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_structs = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh)
        for k, v in batch_arrays.items()
    }
    jitted = jit_train_step(step, shardings, batch_sh, rep)
    with sharding.activation_sharding(mesh):
        start = time.perf_counter()
        compiled = jitted.lower(structs, batch_structs, *uncond, jax.random.key(1)).compile()
        compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    return dict(
        benchmark="train_step_aot",
        config="editmgt_1b",
        params=sum(x.size for x in jax.tree.leaves(structs.params)),
        grid=grid,
        batch=batch,
        dtype=_DTYPE.value,
        mesh=dict(mesh.shape),
        remat="full",
        compile_s=round(compile_s, 1),
        per_device_memory={f: int(getattr(mem, f)) for f in fields},
        model_tflops_per_step=round(float(compiled.cost_analysis().get("flops", 0.0)) / 1e12, 2),
    )


def main(argv):
    del argv
    if _AOT_1B.value:
        print(json.dumps(aot_1b()), flush=True)
        return
    peak = _PEAK.value or measured_peak_tflops()
    for spec in _CONFIGS.value:
        name, grid, batch = spec.split(":")
        print(json.dumps(time_config(name, int(grid), int(batch), peak)), flush=True)


if __name__ == "__main__":
    app.run(main)
