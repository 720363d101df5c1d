"""The production programs, built for a device list (a TPU topology's compile-only devices).

Every program is made by the functions the launch scripts run, never a copy:

- `train`: `launch.train`'s step: `make_train_step` + `jit_train_step`, the state's shapes and
  shardings from `train_state_shapes`, `make_optimizer(config.optim)`, `editmgt_jax.training.from_config.step_options`
  and `sharding.create_mesh(config.mesh...)` on the given devices. Batch: `config.train.batch_size`
  examples (global), split over data x fsdp.
- `edit`: the sampler loop `editmgt_jax.sampling.decode._decode_jit` (what `decode` and the
  `Editor` run) with `transformer_fn.make_model_fn`, at `config.pipeline.resolution`, CFG on
  ([uncond; cond], 2B), region-hold on the pipeline's capture blocks.
- `vq_encode` / `vq_decode`: the tokenizer's `encode_to_ids` / `decode_ids` (job `pipeline`, at
  the pipeline's resolution and edit batch); job `tokenize`: `vq_encode` only (what
  `launch.tokenize_shards` runs) at `config.image_size` and the train batch.
- `text_minilm` / `text_clip` / `text_gemma2`: the text encoder's jitted forward
  (`editmgt_jax.models.text.encoder`), when the config names one (job `pipeline` at the edit
  batch; job `tokenize` at the train batch: the per-batch text encode of launch.train).

Text-encoder shapes come from config fields: states [B, T, D] and pooled [B, P] with
D = model.joint_attention_dim, P = model.pooled_projection_dim and T = text_encoder.max_length
(CLIP_Gemma2: 256). Configs without train/optim/pipeline sections (configs/editmgt_1b.py) get
configs/smoke.py's train section and configs/common.py's optimizer (`complete_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from editmgt_jax import sharding
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import REMAT_POLICIES, TransformerConfig

JOBS = ("train", "edit", "pipeline", "tokenize")
GEMMA_TEXT_LEN = 256  # the official pipeline pads Gemma ids to 256 (models/text/encoder.py)
CLIP_TEXT_LEN = 77
DEFAULT_TRAIN_PX = 512  # configs without image_size: the released recipe's training resolution
DEFAULT_EDIT_PX = 1024  # ... and its editing resolution


@dataclasses.dataclass
class Program:
    """One program to compile: `jitted.lower(*args)` inside `context()`.

    Attributes:
        name: "train", "edit", "vq_encode", ...
        jitted: a `jax.jit` object (or anything with `.lower`).
        args: its arguments: pytrees of `jax.ShapeDtypeStruct`s carrying their shardings.
        mesh: the (data, fsdp, tensor) mesh it runs on.
        info: what the report needs: shapes, parameter counts and our own FLOP/byte counts
            (`editmgt_jax.aot.report`), all JSON-serializable.
    """

    name: str
    jitted: Any
    args: tuple
    mesh: jax.sharding.Mesh
    info: dict[str, Any]

    def context(self):
        return sharding.activation_sharding(self.mesh)


# --- configs -----------------------------------------------------------------------------------


def complete_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the sections the programs need filled in where it has none (the released
    1B structure has only model/mesh/inspect): seed, image_size (512), text_encoder (from the
    model's text_encoder_architecture), vq (the released VQ), train and lora (configs/smoke.py's),
    optim (configs/common.py's), pipeline (configs/smoke.py's, at 1024 px). Sections the config
    has are kept as they are. Returns a new, locked ConfigDict."""
    from configs import common, smoke

    base = smoke.get_config()
    out = ml_collections.ConfigDict(config.to_dict())
    if "seed" not in out:
        out.seed = 0
    if "image_size" not in out:
        out.image_size = DEFAULT_TRAIN_PX
    if "text_encoder" not in out:
        arch = out.model.get("text_encoder_architecture", "CLIP_Gemma2")
        kind = "minilm" if arch == "MiniLM" else "clip_gemma2"
        length = base.text_encoder.max_length if kind == "minilm" else GEMMA_TEXT_LEN
        out.text_encoder = ml_collections.ConfigDict(dict(kind=kind, max_length=length))
    if "vq" not in out:
        out.vq = ml_collections.ConfigDict()  # empty: VQConfig() (the released tokenizer)
    if "vq_checkpoint" not in out:
        out.vq_checkpoint = ""
    for name in ("train", "lora"):
        if name not in out:
            out[name] = base[name]
    if "optim" not in out:
        out.optim = common.optim()
    if "pipeline" in out and not out.pipeline and not out.get("init_from"):
        # configs/editmgt_crispedit.py leaves it empty for the bundle's; with no bundle, the
        # release's defaults now, so that --config.pipeline.x= overrides apply to them.
        from editmgt_jax.training.config_from_bundle import default_pipeline

        out.pipeline = ml_collections.ConfigDict(default_pipeline(out))
    if "pipeline" not in out:
        out.pipeline = base.pipeline
        out.pipeline.resolution = DEFAULT_EDIT_PX
        blocks = int(out.model.num_layers) + int(out.model.num_single_layers)
        out.pipeline.capture_blocks = (blocks - 12,) if blocks > 12 else (blocks - 1,)
    out.lock()
    return out


def text_shapes(config) -> tuple[int, int, int]:
    """(T, D, P): the text encoder's states [B, T, D] and pooled [B, P] for this config."""
    model = config.model
    text = config.get("text_encoder", ml_collections.ConfigDict())
    kind = text.get("kind", "clip_gemma2")
    default = GEMMA_TEXT_LEN if kind == "clip_gemma2" else 32
    length = int(text.get("max_length", default) or default)
    return length, int(model.joint_attention_dim), int(model.pooled_projection_dim)


def tokenizer_config(config):
    """The image tokenizer's typed config: `config.vq` when it has fields; else the
    `vq_checkpoint` folder's config.json; else the embedded default model's tokenizer when its
    codebook matches (configs/default.py names a workdir that a fresh checkout lacks); else the
    released VQ (`VQConfig()`)."""
    from editmgt_jax.models.tokenizer import tokenizer_config as from_dict
    from editmgt_jax.models.vq import VQConfig

    if config.get("vq") and len(config.vq):
        return VQConfig(**config.vq.to_dict())
    folder = config.get("vq_checkpoint") or ""
    if folder and os.path.isfile(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return from_dict(json.load(f))
    if folder:
        from editmgt_jax.assets import DEFAULT_MODEL

        with open(os.path.join(DEFAULT_MODEL, "bundle.json"), encoding="utf-8") as f:
            embedded = json.load(f)["vq"]
        if int(embedded["num_vq_embeddings"]) == int(config.model.codebook_size):
            return from_dict(embedded)
        raise FileNotFoundError(
            f"vq_checkpoint={folder!r} has no config.json, and the embedded tokenizer's "
            f"{embedded['num_vq_embeddings']} codes do not match model.codebook_size"
        )
    return VQConfig()


# --- sharding helpers --------------------------------------------------------------------------


def _mesh(config, devices) -> jax.sharding.Mesh:
    return sharding.create_mesh(
        config.mesh.ici_parallelism, config.mesh.dcn_parallelism, devices=devices
    )


def _batch_spec(mesh, batch: int) -> PartitionSpec:
    """The batch axis over data x fsdp when it divides; replicated otherwise (an edit of batch 1
    on 8 chips)."""
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    return PartitionSpec(("data", "fsdp")) if batch % dp == 0 else PartitionSpec()


def _struct(shape, dtype, sharding_) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding_)


def _shaped(abstract, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )


def _key_struct(mesh, count: int | None = None):
    """A typed PRNG key ([] or [count]) as a ShapeDtypeStruct, replicated."""
    make = (lambda: jax.random.key(0)) if count is None else (lambda: jax.random.split(
        jax.random.key(0), count
    ))  # fmt: skip
    shape = jax.eval_shape(make)
    return jax.ShapeDtypeStruct(
        shape.shape, shape.dtype, sharding=NamedSharding(mesh, PartitionSpec())
    )


def tree_bytes(tree) -> int:
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def tree_count(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (its shard of each leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
    return int(total)


# --- the programs -------------------------------------------------------------------------------


def transformer_config(config) -> TransformerConfig:
    return TransformerConfig.from_dict(config.model)


def train_program(config, devices) -> Program:
    """`launch.train`'s jitted step at `config.train.batch_size` (global) x `config.image_size`."""
    from editmgt_jax.training.from_config import lora_section, step_options, use_ema, validate
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.step import jit_train_step, make_train_step
    from editmgt_jax.training.train_state import train_state_shapes

    mesh = _mesh(config, devices)
    validate(config, mesh)  # batch vs data x fsdp: launch.train's own check
    cfg = transformer_config(config)
    model = Transformer(cfg)
    tx = make_optimizer(config.optim, config.train.steps)
    stride = tokenizer_config(config).stride
    grid = int(config.image_size) // stride
    text_len, states_dim, pooled_dim = text_shapes(config)
    sample = example_inputs(cfg, batch=1, grid=(grid, grid), text_len=text_len)
    lora = lora_section(config)
    state, state_shardings = train_state_shapes(
        model, tx, jax.random.key(config.seed), sample, mesh, lora, use_ema(config)
    )
    options = step_options(config, cfg, lora)
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    replicated = NamedSharding(mesh, PartitionSpec())
    step = jit_train_step(
        make_train_step(model, options), state_shardings, batch_sharding, replicated
    )
    b = int(config.train.batch_size)
    batch = dict(
        target_tokens=_struct((b, grid, grid), jnp.int32, batch_sharding),
        source_tokens=_struct((b, grid, grid), jnp.int32, batch_sharding),
        text_states=_struct((b, text_len, states_dim), jnp.float32, batch_sharding),
        pooled=_struct((b, pooled_dim), jnp.float32, batch_sharding),
        micro_conds=_struct((b, 5), jnp.float32, batch_sharding),
    )
    uncond = (
        _struct((text_len, states_dim), jnp.float32, replicated),
        _struct((pooled_dim,), jnp.float32, replicated),
    )
    args = (state, batch, *uncond, _key_struct(mesh))
    trained = state.params
    info = dict(
        batch=b,
        grid=grid,
        px=int(config.image_size),
        text_len=text_len,
        params=tree_count(state.params)
        + (tree_count(state.frozen_params) if state.frozen_params is not None else 0),
        trained_params=tree_count(trained),
        state_bytes_per_device=per_device_bytes(state),
        batch_bytes_per_device=per_device_bytes(batch),
        param_bytes_per_device=per_device_bytes(state.params),
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        remat_policy=cfg.remat_policy,
        attention_impl=cfg.attention_impl,
        scan_layers=cfg.scan_layers,
        lora_rank=int(config.lora.rank),
        fsdp=int(mesh.shape["fsdp"]),
        transformer=_transformer_shape(cfg),
    )
    return Program("train", step, args, mesh, info)


def train_state_totals(config, devices) -> dict[str, int]:
    """Bytes of the whole train state, every copy (weights, optimizer moments of the config's
    kind, EMA or none, the accumulation buffer, frozen text encoders), and the trained parameter
    count: what the layout only divides. Built abstractly on an all-fsdp mesh (no compile)."""
    trial = config.copy_and_resolve_references()
    with trial.unlocked():
        trial.mesh.ici_parallelism = (1, len(devices), 1)
        trial.mesh.dcn_parallelism = (1, 1, 1)
        trial.train.batch_size = len(devices)
    program = train_program(trial, devices)
    return dict(
        state_bytes=tree_bytes(program.args[0]), trained_params=program.info["trained_params"]
    )


def plan_shape(config, devices) -> dict[str, Any]:
    """The train step's sizes the planner's analytic model reads (`editmgt_jax.aot.plan.estimate`)."""
    from editmgt_jax.models.transformer_stats import count_params

    cfg = transformer_config(config)
    text_len, states_dim, pooled_dim = text_shapes(config)
    grid = int(config.image_size) // tokenizer_config(config).stride
    return dict(
        params=count_params(cfg),
        inner_dim=cfg.inner_dim,
        heads=cfg.num_attention_heads,
        num_blocks=cfg.num_blocks,
        positions=2 * (grid // cfg.token_stride) ** 2 + text_len,
        act_bytes=2 if cfg.dtype == "bfloat16" else 4,
        batch_bytes=4 * (2 * grid * grid + text_len * states_dim + pooled_dim + 5),
        fused_attention=cfg.attention_impl in ("splash", "cudnn"),
        **train_state_totals(config, devices),
    )


def _transformer_shape(cfg: TransformerConfig) -> dict:
    return dict(
        inner_dim=cfg.inner_dim,
        num_blocks=cfg.num_blocks,
        token_stride=cfg.token_stride,
        codebook_size=cfg.codebook_size,
    )


def _abstract_params(cfg: TransformerConfig, mesh, grid: int, text_len: int):
    """(params as sharded ShapeDtypeStructs, param count) of the transformer for `mesh`."""
    import flax.linen as nn

    model = Transformer(cfg)
    sample = example_inputs(cfg, batch=1, grid=(grid, grid), text_len=text_len)
    boxed = jax.eval_shape(lambda k: model.init(k, **sample)["params"], jax.random.key(0))
    shardings = sharding.tree_shardings(boxed, mesh)
    return _shaped(nn.meta.unbox(boxed), shardings)


def edit_program(config, devices, batch: int = 1, steps: int | None = None) -> Program:
    """The sampler loop (`decode`) for `batch` edits at `config.pipeline.resolution`, the
    pipeline's steps, CFG (the model runs on 2B) and region-hold on its capture blocks."""
    from editmgt_jax.sampling import transformer_fn

    decode_lib = importlib.import_module("editmgt_jax.sampling.decode")  # not the function
    mesh = _mesh(config, devices)
    cfg = transformer_config(config)
    pipe = config.pipeline
    stride = tokenizer_config(config).stride
    grid = int(pipe.resolution) // stride
    if grid % cfg.token_stride:
        raise ValueError(
            f"pipeline.resolution={pipe.resolution} gives a {grid}-token grid, not divisible by "
            f"the transformer's downsample factor {cfg.token_stride}"
        )
    text_len, states_dim, pooled_dim = text_shapes(config)
    blocks = tuple(pipe.capture_blocks)
    hold = float(pipe.hold_threshold) > 0 and bool(blocks)
    model_fn = transformer_fn.make_model_fn(
        cfg, blocks if hold else (), float(pipe.reference_strength)
    )
    decode_config = transformer_fn.decode_config_for(cfg, pipe, steps or pipe.steps, (grid, grid))
    params = _abstract_params(cfg, mesh, grid, text_len)
    by_batch = NamedSharding(mesh, _batch_spec(mesh, batch))
    f32 = jnp.float32
    inputs = decode_lib.EditInputs(
        source_tokens=_struct((batch, grid, grid), jnp.int32, by_batch),
        text_states=_struct((batch, text_len, states_dim), f32, by_batch),
        pooled=_struct((batch, pooled_dim), f32, by_batch),
        micro_conds=_struct((batch, 5), f32, by_batch),
        guidance=_struct((batch,), f32, by_batch),
        edit_mask=_struct((batch, grid, grid), bool, by_batch),
        uncond_text_states=_struct((batch, text_len, states_dim), f32, by_batch),
        uncond_pooled=_struct((batch, pooled_dim), f32, by_batch),
        hold_threshold=_struct((batch,), f32, by_batch) if hold else None,
    )
    keys = _key_struct(mesh, batch)
    jitted = functools.partial(decode_lib._decode_jit.lower, model_fn, decode_config, True)
    info = dict(
        batch=batch,
        model_batch=2 * batch,  # CFG: [uncond; cond]
        grid=grid,
        px=int(pipe.resolution),
        steps=int(steps or pipe.steps),
        text_len=text_len,
        capture_blocks=list(blocks) if hold else [],
        params=tree_count(params),
        param_bytes_per_device=per_device_bytes(params),
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        scan_layers=cfg.scan_layers,
        transformer=_transformer_shape(cfg),
    )
    return Program("edit", _Lowerable(jitted), (params, inputs, keys), mesh, info)


class _Lowerable:
    """Gives a `functools.partial` of a `.lower` (static arguments bound) the jit interface."""

    def __init__(self, lower: Callable):
        self.lower = lower


def vq_programs(config, devices, batch: int, px: int) -> list[Program]:
    """The tokenizer's encode [B, px, px, 3] -> ids and decode ids -> pixels, float32 (as
    bundles keep it), parameters replicated (small), the batch split where it divides."""
    import flax.linen as nn

    from editmgt_jax.models.tokenizer import tokenizer_module

    mesh = _mesh(config, devices)
    vq_cfg = tokenizer_config(config)
    model = tokenizer_module(vq_cfg)
    stride = vq_cfg.stride
    if px % stride:
        raise ValueError(f"{px} px is not divisible by the tokenizer's stride {stride}")
    images = jax.ShapeDtypeStruct((1, stride, stride, 3), jnp.float32)
    boxed = jax.eval_shape(lambda k, x: model.init(k, x)["params"], jax.random.key(1), images)
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        nn.meta.unbox(boxed),
    )
    by_batch = NamedSharding(mesh, _batch_spec(mesh, batch))
    grid = px // stride
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids))
    decode = jax.jit(lambda p, ids: model.apply({"params": p}, ids, method=model.decode_ids))
    info = dict(batch=batch, px=px, grid=grid, params=tree_count(params), kind=type(model).__name__)
    return [
        Program(
            "vq_encode",
            encode,
            (params, _struct((batch, px, px, 3), jnp.float32, by_batch)),
            mesh,
            dict(info),
        ),
        Program(
            "vq_decode",
            decode,
            (params, _struct((batch, grid, grid), jnp.int32, by_batch)),
            mesh,
            dict(info),
        ),
    ]


def text_programs(config, devices, batch: int) -> list[Program]:
    """The text encoder's jitted forward for `batch` instructions: MiniLM (states + pooled), or
    CLIP (pooled, 77 ids) and Gemma 2 (states, T ids; bfloat16 weights, as it must be loaded to
    fit) for clip_gemma2. Weights sharded by their logical axes on the mesh."""
    import flax.linen as nn

    from editmgt_jax.models.text import encoder as text_lib
    from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
    from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config
    from editmgt_jax.models.text.minilm import Bert, BertConfig

    kind = config.text_encoder.get("kind", "")
    mesh = _mesh(config, devices)
    text_len, _, _ = text_shapes(config)
    by_batch = NamedSharding(mesh, _batch_spec(mesh, batch))

    def program(name, module, forward, length, *extra):
        ids = [jax.ShapeDtypeStruct((1, length), jnp.int32) for _ in (None, *extra)]
        boxed = jax.eval_shape(lambda k, *x: module.init(k, *x)["params"], jax.random.key(2), *ids)
        params = _shaped(nn.meta.unbox(boxed), sharding.tree_shardings(boxed, mesh))
        inputs = [_struct((batch, length), jnp.int32, by_batch) for _ in (None, *extra)]
        info = dict(batch=batch, text_len=length, params=tree_count(params))
        return Program(name, jax.jit(forward), (params, *inputs), mesh, info)

    if kind == "minilm":
        bert = Bert(BertConfig())
        forward = functools.partial(text_lib._minilm_forward, bert, False)
        return [program("text_minilm", bert, forward, text_len, "mask")]
    if kind == "clip_gemma2":
        clip = CLIPText(CLIPTextConfig())
        gemma = Gemma2(Gemma2Config(), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
        return [
            program(
                "text_clip",
                clip,
                functools.partial(text_lib._clip_pooled, clip),
                CLIP_TEXT_LEN,
            ),
            program(
                "text_gemma2",
                gemma,
                functools.partial(text_lib._gemma_states, gemma),
                text_len,
            ),
        ]
    return []


def build(
    job: str, config, devices, edit_batch: int = 1, edit_steps: int | None = None
) -> list[Program]:
    """The programs of one job: train | edit | pipeline | tokenize (see the module docstring)."""
    if job == "train":
        return [train_program(config, devices)]
    if job == "edit":
        return [edit_program(config, devices, edit_batch, edit_steps)]
    if job == "pipeline":
        px = int(config.pipeline.resolution)
        return vq_programs(config, devices, edit_batch, px) + text_programs(
            config, devices, edit_batch
        )
    if job == "tokenize":
        # launch.tokenize_shards encodes images only (no decode); launch.train encodes the text
        # of every batch beside its step.
        b = int(config.train.batch_size)
        vq = vq_programs(config, devices, b, int(config.image_size))
        return [p for p in vq if p.name == "vq_encode"] + text_programs(config, devices, b)
    raise ValueError(f"job={job!r}; expected one of {', '.join(JOBS)} or all")


def lower_and_compile(program: Program):
    """(compiled, lowered, seconds to compile) of one program."""
    import time

    start = time.perf_counter()
    with program.context():
        lowered = program.jitted.lower(*program.args)
    compiled = lowered.compile()
    return compiled, lowered, time.perf_counter() - start


def remat_policies() -> tuple[str, ...]:
    """The policies `config.model.remat_policy` allows (`editmgt_jax.models.transformer`)."""
    return tuple(REMAT_POLICIES)
