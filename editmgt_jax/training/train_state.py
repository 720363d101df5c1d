"""The training state: step, parameters, optimizer state, EMA, and the non-finite step counters."""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from absl import logging

from editmgt_jax import sharding
from editmgt_jax.checkpoint.convert.scan_layout import scan_params
from editmgt_jax.common_types import Array
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.training.lora import init_lora


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to resume exactly (with the data iterator's state).

    step: int32 scalar, optimizer updates applied.
    params / ema_params: parameter trees (float32 master weights); ema_params is None when the
      run keeps no EMA (`train.ema_decay = 0`, as the released model's fine-tuning recipe).
    opt_state: optax state.
    skipped_steps: int32 scalar, steps skipped for a non-finite loss or gradient.
    consecutive_skips: int32 scalar, the current run of skipped steps.
    frozen_params: with LoRA, the frozen base parameters (`params` then holds the adapters only).
    """

    step: Array
    params: Any
    opt_state: Any
    ema_params: Any
    skipped_steps: Array
    consecutive_skips: Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    frozen_params: Any = None

    @classmethod
    def create(
        cls,
        params: Any,
        tx: optax.GradientTransformation,
        frozen_params: Any = None,
        use_ema: bool = True,
    ) -> TrainState:
        zero = jnp.zeros((), jnp.int32)
        return cls(
            step=zero,
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(lambda x: x, params) if use_ema else None,
            skipped_steps=zero,
            consecutive_skips=zero,
            tx=tx,
            frozen_params=frozen_params,
        )


def _state_init(model, tx, sample_inputs, lora, use_ema):
    def init(key):
        params = model.init(key, **sample_inputs)["params"]
        if lora is None:
            return TrainState.create(params, tx, use_ema=use_ema)
        adapters = init_lora(jax.random.fold_in(key, 1), params, lora.rank, tuple(lora.targets))
        return TrainState.create(adapters, tx, frozen_params=params, use_ema=use_ema)

    return init


def train_state_shapes(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample_inputs: dict[str, Any],
    mesh: jax.sharding.Mesh,
    lora: Any = None,
    use_ema: bool = True,
) -> tuple[TrainState, Any]:
    """(abstract state, shardings) of `create_sharded_train_state`, computing nothing.

    The abstract state's leaves are `jax.ShapeDtypeStruct`s that carry their shardings: what a
    checkpoint restores into (resuming or exporting needs no initialised weights, so no init
    program is compiled or run).
    """
    abstract = jax.eval_shape(_state_init(model, tx, sample_inputs, lora, use_ema), rng)
    shardings = sharding.tree_shardings(abstract, mesh)  # from the boxes' logical axes
    shaped = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nn.meta.unbox(abstract),
        shardings,
    )
    return shaped, shardings


def create_sharded_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample_inputs: dict[str, Any],
    mesh: jax.sharding.Mesh,
    lora: Any = None,
    use_ema: bool = True,
) -> tuple[TrainState, Any]:
    """Creates the state directly sharded on `mesh`.

    Parameter, EMA and optimizer-moment shardings all follow the parameters' logical axes (the
    optimizer state inherits the parameters' partitioning boxes). With `lora` (a config with
    `rank` and `targets`), the initialised parameters become `frozen_params` and only the adapters
    are trained; without `use_ema` the state keeps no EMA. Returns (state, shardings).
    """
    _, shardings = train_state_shapes(model, tx, rng, sample_inputs, mesh, lora, use_ema)
    init = _state_init(model, tx, sample_inputs, lora, use_ema)
    with sharding.activation_sharding(mesh):
        state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(rng)
    return state, shardings


def partial_params(initial: Any, loaded: Any) -> tuple[Any, dict[str, list[str]]]:
    """`initial` with every leaf that `loaded` has at the same path and shape replaced by the
    loaded one, as the official training script starts EditMGT from Meissonic (whose text path
    has no connector and a narrower input). Returns (params, {"kept_initial": [...],
    "unused": [...]}): the paths left at their initial values, and the loaded paths not used."""
    from editmgt_jax.checkpoint.convert.table import flatten, unflatten

    ours, theirs = flatten(initial), flatten(loaded)
    kept = sorted(p for p, v in ours.items() if p not in theirs or theirs[p].shape != v.shape)
    keep = set(kept)
    merged = {p: (v if p in keep else jnp.asarray(theirs[p], v.dtype)) for p, v in ours.items()}
    unused = sorted(p for p in theirs if p not in ours or p in keep)
    return unflatten(merged), dict(kept_initial=kept, unused=unused)


def warm_start(
    path: str, cfg: TransformerConfig, state: TrainState, shardings, partial: bool = False
) -> TrainState:
    """The state with pretrained transformer weights from a bundle or an official folder.

    Params, EMA (a copy) and fresh optimizer moments; with LoRA, the frozen base weights. The
    architecture fields that fix parameter shapes must match `cfg` (one error lists them all),
    unless `partial`: then the weights whose path and shape match are loaded and the others keep
    their initial values (`partial_params`; a warning lists both sides).
    """
    # Imported here: reading stored weights needs safetensors, the train step does not
    # (benchmarks.accelerator runs it on hosts without safetensors).
    from editmgt_jax.checkpoint import load_bundle, load_transformer

    if os.path.isfile(os.path.join(path, "bundle.json")):
        bundle = load_bundle(path)
        loaded_cfg, params = bundle.transformer_config, bundle.transformer_params
    else:
        loaded_cfg, params = load_transformer(path)
    mismatched = {
        f: (getattr(loaded_cfg, f), getattr(cfg, f))
        for f in (
            "num_layers",
            "num_single_layers",
            "num_attention_heads",
            "attention_head_dim",
            "vocab_size",
            "codebook_size",
            "joint_attention_dim",
            "pooled_projection_dim",
        )
        if getattr(loaded_cfg, f) != getattr(cfg, f)
    }
    if mismatched and not partial:
        raise ValueError(f"init_from={path!r} does not fit config.model: {mismatched}")
    if cfg.scan_layers and not loaded_cfg.scan_layers:
        params = scan_params(params)
    if partial:
        initial = state.params if state.frozen_params is None else state.frozen_params
        params, report = partial_params(jax.device_get(initial), params)
        logging.warning(
            "init_from=%s loaded in part (init_partial): %d weights keep their initial values "
            "%s; %d stored weights unused %s",
            path,
            len(report["kept_initial"]),
            report["kept_initial"],
            len(report["unused"]),
            report["unused"],
        )
    if state.frozen_params is not None:
        return state.replace(frozen_params=jax.device_put(params, shardings.frozen_params))
    params = jax.device_put(params, shardings.params)
    return state.replace(
        params=params,
        # A copy, not the same buffers: the train step donates the state, and a buffer may be
        # donated only once.
        ema_params=None if state.ema_params is None else jax.tree.map(jnp.copy, params),
        # Placed as the created state's: a fresh init leaves scalars (the step counts)
        # unsharded, which would make the jitted step compile a second time.
        opt_state=jax.device_put(state.tx.init(params), shardings.opt_state),
    )
