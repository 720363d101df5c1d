"""Run under 8 simulated CPU devices (tests/test_training_sharded.py); prints one JSON line.

Three train steps of the smoke transformer on 1 device and on a (data 2 x fsdp 4) mesh.
"""

import json
import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import smoke  # noqa: E402
from editmgt_jax import sharding  # noqa: E402
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs  # noqa: E402
from editmgt_jax.training.optimizer import make_optimizer  # noqa: E402
from editmgt_jax.training.step import StepOptions, jit_train_step, make_train_step  # noqa: E402
from editmgt_jax.training.train_state import create_sharded_train_state  # noqa: E402


def run(mesh_shape, batch, uncond):
    config = smoke.get_config()
    cfg = TransformerConfig.from_dict(config.model)
    model = Transformer(cfg)
    mesh = sharding.create_mesh(mesh_shape, devices=jax.devices()[: int(np.prod(mesh_shape))])
    tx = make_optimizer(ml_collections.ConfigDict(config.optim), 10)
    sample = example_inputs(cfg, batch=1, grid=(8, 8), text_len=32)
    state, shardings = create_sharded_train_state(model, tx, jax.random.key(0), sample, mesh)
    batch_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step = jit_train_step(
        make_train_step(model, StepOptions(mask_id=cfg.mask_token_id)), shardings, batch_sh, rep
    )
    losses = []
    with sharding.activation_sharding(mesh):
        for _ in range(3):
            state, metrics = step(state, batch, *uncond, jax.random.key(1))
            losses.append(float(metrics["loss"]))
    split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.opt_state))
    return losses, split


def main():
    rng = np.random.default_rng(0)
    batch = dict(
        target_tokens=rng.integers(0, 64, (8, 8, 8)).astype(np.int32),
        source_tokens=rng.integers(0, 64, (8, 8, 8)).astype(np.int32),
        text_states=rng.standard_normal((8, 32, 384)).astype(np.float32),
        pooled=rng.standard_normal((8, 384)).astype(np.float32),
        micro_conds=np.tile(np.float32([32, 32, 0, 0, 6]), (8, 1)),
    )
    uncond = (np.zeros((32, 384), np.float32), np.zeros((384,), np.float32))
    single, _ = run([1, 1, 1], batch, uncond)
    sharded, split = run([2, 4, 1], batch, uncond)
    print(json.dumps(dict(single=single, sharded=sharded, opt_state_split=split)))


if __name__ == "__main__":
    main()
