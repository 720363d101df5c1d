"""The training state: step, parameters, optimizer state, EMA, and the non-finite step counters."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from editmgt_jax import sharding
from editmgt_jax.common_types import Array
from editmgt_jax.training.lora import init_lora


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to resume exactly (with the data iterator's state).

    step: int32 scalar, optimizer updates applied.
    params / ema_params: parameter trees (float32 master weights).
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
        cls, params: Any, tx: optax.GradientTransformation, frozen_params: Any = None
    ) -> TrainState:
        zero = jnp.zeros((), jnp.int32)
        return cls(
            step=zero,
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(lambda x: x, params),
            skipped_steps=zero,
            consecutive_skips=zero,
            tx=tx,
            frozen_params=frozen_params,
        )


def create_sharded_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample_inputs: dict[str, Any],
    mesh: jax.sharding.Mesh,
    lora: Any = None,
) -> tuple[TrainState, Any]:
    """Creates the state directly sharded on `mesh`.

    Parameter, EMA and optimizer-moment shardings all follow the parameters' logical axes (the
    optimizer state inherits the parameters' partitioning boxes). With `lora` (a config with
    `rank` and `targets`), the initialised parameters become `frozen_params` and only the adapters
    are trained. Returns (state, shardings).
    """

    def init(key):
        params = model.init(key, **sample_inputs)["params"]
        if lora is None:
            return TrainState.create(params, tx)
        adapters = init_lora(jax.random.fold_in(key, 1), params, lora.rank, tuple(lora.targets))
        return TrainState.create(adapters, tx, frozen_params=params)

    abstract = jax.eval_shape(init, rng)
    shardings = sharding.tree_shardings(abstract, mesh)
    with sharding.activation_sharding(mesh):
        state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(rng)
    return state, shardings
