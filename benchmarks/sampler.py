"""Edit sampler speed: the token loop only (one jitted while_loop), one JSON line per run.

    python -m benchmarks.sampler --config official_tiny --grid 32 --steps 16 --batch 1 \
        --hold_threshold 0.3 --runs 5
    python -m benchmarks.sampler --config small_40m --grid 32 --steps 16 --guidance 6
    python -m benchmarks.sampler --config editmgt_1b --grid 64 --steps 16 --dtype bfloat16  # GPU/TPU
    python -m benchmarks.sampler --attention_chunk 32   # query rows per block of logits

Like the official timing, the text states are precomputed (random arrays of the right shape:
256 tokens for CLIP_Gemma2 models, 32 for MiniLM ones) and VQ encode/decode are not timed. Random
weights; CFG on (guidance > 1: the model runs on [uncond; cond], batch 2B); region-hold with lambda
from one captured block (default: the middle single-stream block). `median_s_per_edit` is the
median over `--runs` calls (after one warm-up) of the call time divided by the batch.
Peak memory: the device's `memory_stats()` when it has them (GPU/TPU), else the compiled loop's
`memory_analysis()` and the process's peak RSS.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import resource
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags

from editmgt_jax import sharding
from editmgt_jax.checkpoint.bundle import DEFAULT_PIPELINE
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.sampling import transformer_fn

# The submodule (the package re-exports the function `decode` under the same name).
decode_lib = importlib.import_module("editmgt_jax.sampling.decode")

FLAGS = flags.FLAGS
TEXT_LEN = {"CLIP_Gemma2": 256, "MiniLM": 32}


def define_flags() -> None:
    """Defines the flags (only when run as a script)."""
    flags.DEFINE_string("config", "official_tiny", "Config module in configs/ (its `model`).")
    flags.DEFINE_integer("grid", 32, "Token grid side (pixels / VQ stride).")
    flags.DEFINE_integer("steps", 16, "Decoding steps.")
    flags.DEFINE_integer("batch", 1, "Edits per call.")
    flags.DEFINE_float("hold_threshold", 0.3, "Region-hold lambda (0: off, no capture).")
    flags.DEFINE_float("guidance", 6.0, "CFG scale (> 1: the model runs on 2B).")
    flags.DEFINE_integer("runs", 5, "Timed calls after the warm-up.")
    flags.DEFINE_integer("capture_block", -1, "Captured block; -1: the middle single-stream one.")
    flags.DEFINE_integer("text_len", 0, "Text tokens; 0: by the text encoder architecture.")
    flags.DEFINE_string("dtype", "float32", "Compute dtype (float32 or bfloat16).")
    flags.DEFINE_float("reference_strength", DEFAULT_PIPELINE["reference_strength"], "s.")
    flags.DEFINE_integer("seed", 0, "Seed of the weights, inputs and sampler keys.")
    flags.DEFINE_integer(
        "attention_chunk", -1, "Query rows per block of attention logits; -1: the config's."
    )
    flags.DEFINE_integer(
        "devices",
        1,
        "Shard the [uncond; cond] batch over this many devices (on a CPU: host devices, each "
        "with its own thread, so elementwise work uses every core).",
    )


def _peak_memory(compiled) -> dict:
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return dict(peak_bytes=int(stats["peak_bytes_in_use"]), peak_source="memory_stats")
    out = dict(peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    analysis = compiled.memory_analysis()
    if analysis is not None:
        fields = ("argument", "output", "temp", "generated_code")
        out.update(
            {f"compiled_{f}_bytes": int(getattr(analysis, f"{f}_size_in_bytes", 0)) for f in fields}
        )
    out["peak_source"] = "memory_analysis+rss"
    return out


def bench(
    name: str,
    grid: int,
    steps: int,
    batch: int,
    hold_threshold: float,
    guidance: float,
    runs: int,
    capture_block: int = -1,
    text_len: int = 0,
    dtype: str = "float32",
    reference_strength: float = 1.1,
    seed: int = 0,
    devices: int = 1,
    attention_chunk: int = -1,
) -> dict:
    """Times the compiled sampler loop; returns the JSON record."""
    module = importlib.import_module(f"configs.{name}")
    cfg = TransformerConfig.from_dict(module.get_config().model).replace(dtype=dtype)
    if attention_chunk >= 0:
        cfg = cfg.replace(attention_chunk=attention_chunk)
    if grid % cfg.token_stride:
        raise ValueError(
            f"grid {grid} is not divisible by the downsample factor {cfg.token_stride}"
        )
    text_len = text_len or TEXT_LEN.get(cfg.text_encoder_architecture, 256)
    block = cfg.num_layers + cfg.num_single_layers // 2 if capture_block < 0 else capture_block
    blocks = (block,) if hold_threshold > 0 else ()

    rng = np.random.default_rng(seed)
    init_inputs = example_inputs(cfg, batch=1, grid=(2 * cfg.token_stride,) * 2, text_len=4)
    params = jax.jit(lambda k, x: nn.meta.unbox(Transformer(cfg).init(k, **x)["params"]))(
        jax.random.key(seed, impl="rbg"), init_inputs
    )
    n_params = int(sum(x.size for x in jax.tree.leaves(params)))
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    inputs = decode_lib.make_inputs(
        rng.integers(0, cfg.codebook_size, (batch, grid, grid)).astype(np.int32),
        normal(batch, text_len, cfg.joint_attention_dim),
        normal(batch, cfg.pooled_projection_dim),
        transformer_fn.micro_conds(grid * 16, grid * 16, 6.0),
        mask_token_id=cfg.mask_token_id,
        uncond_text_states=normal(batch, text_len, cfg.joint_attention_dim),
        uncond_pooled=normal(batch, cfg.pooled_projection_dim),
        guidance=guidance,
        hold_threshold=hold_threshold if blocks else None,
    )
    config = decode_lib.DecodeConfig(
        num_steps=steps,
        mask_token_id=cfg.mask_token_id,
        timestep_convention=cfg.timestep_convention,
        score_grid=(grid // cfg.token_stride,) * 2,
    )
    model_fn = transformer_fn.make_model_fn(cfg, blocks, reference_strength)
    keys = jax.random.split(jax.random.key(seed), batch)

    # AOT-compile the same jitted loop `decode` runs, to time compilation and read its memory.
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if devices > 1:
            mesh = sharding.create_mesh((devices, 1, 1), devices=jax.devices()[:devices])
            stack.enter_context(sharding.activation_sharding(mesh))
        lowered = decode_lib._decode_jit.lower(model_fn, config, True, params, inputs, keys)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params, inputs, keys).tokens)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, inputs, keys).tokens)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(
        benchmark="sampler",
        config=name,
        params=n_params,
        grid=grid,
        steps=steps,
        batch=batch,
        guidance=guidance,
        hold_threshold=hold_threshold,
        capture_blocks=list(blocks),
        text_len=text_len,
        dtype=dtype,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        cpu_count=os.cpu_count(),
        compile_s=round(compile_s, 3),
        median_s_per_edit=round(median / batch, 4),
        min_s_per_edit=round(min(times) / batch, 4),
        runs=runs,
        devices=devices,
        attention_chunk=cfg.attention_chunk,
        loadavg_1m=round(os.getloadavg()[0], 2),
        jax=jax.__version__,
        python=platform.python_version(),
        **_peak_memory(compiled),
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""
    ):
        # Before the first JAX call initializes the CPU backend.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={FLAGS.devices}"
        )
    record = bench(
        FLAGS.config,
        FLAGS.grid,
        FLAGS.steps,
        FLAGS.batch,
        FLAGS.hold_threshold,
        FLAGS.guidance,
        FLAGS.runs,
        capture_block=FLAGS.capture_block,
        text_len=FLAGS.text_len,
        dtype=FLAGS.dtype,
        attention_chunk=FLAGS.attention_chunk,
        reference_strength=FLAGS.reference_strength,
        seed=FLAGS.seed,
        devices=FLAGS.devices,
    )
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
