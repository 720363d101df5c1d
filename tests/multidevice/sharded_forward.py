"""Run under 8 simulated CPU devices (see tests/test_sharding.py); prints one JSON line."""

import json
import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import small_40m  # noqa: E402
from editmgt_jax import sharding  # noqa: E402
from editmgt_jax.checkpoint.convert.from_torch import load_transformer  # noqa: E402
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs  # noqa: E402
from tests.fixtures_path import fixtures_dir  # noqa: E402


def main():
    assert jax.device_count() == 8, jax.devices()
    cfg, params = load_transformer(fixtures_dir("official_tiny"))
    data = np.load(fixtures_dir("official_tiny", "io.npz"))
    inputs = dict(
        tokens=data["hidden_states"].astype(np.int32),
        text_states=data["encoder_hidden_states"],
        pooled=data["pooled_projections"],
        micro_conds=data["micro_conds"],
        timestep=data["timestep"],
        source_tokens=data["reference_image_hidden_states"].astype(np.int32),
    )
    model = Transformer(cfg)
    apply = lambda p, x: model.apply(
        {"params": p}, **x, reference_strength=1.1, capture_blocks=(3,)
    )
    single = jax.jit(apply)(params, inputs)

    mesh = sharding.create_mesh([1, 4, 2])
    shardings = sharding.param_shardings(model, inputs, mesh)
    sharded_params = jax.device_put(params, shardings)
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    # batch 2 over data x fsdp = 4 does not divide: keep inputs replicated, weights sharded.
    with sharding.activation_sharding(mesh):
        sharded = jax.jit(apply)(sharded_params, inputs)
    logits_err = float(np.abs(np.asarray(single[0]) - np.asarray(sharded[0])).max())
    capture_err = float(np.abs(np.asarray(single[1][3]) - np.asarray(sharded[1][3])).max())
    split = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_flatten_with_path(sharded_params)[0]
        if not x.sharding.is_fully_replicated
    ]

    # Batch-sharded too: batch 4 over data x fsdp, the two examples twice (the examples of a
    # batch are independent: the reference is the single-device logits, twice).
    inputs4 = {k: np.concatenate([v, v]) for k, v in inputs.items()}
    ref4 = np.concatenate([np.asarray(single[0])] * 2)
    inputs4_sharded = jax.device_put(inputs4, batch)
    with sharding.activation_sharding(mesh):
        out4 = jax.jit(apply)(sharded_params, inputs4_sharded)
    batch_err = float(np.abs(ref4 - np.asarray(out4[0])).max())

    # The splash kernel (Pallas interpreter) runs per shard in shard_map: batch over data x fsdp,
    # heads over tensor; the same logits as the single-device einsum attention.
    splash = Transformer(cfg.replace(attention_impl="splash_interpret"))
    splash_apply = lambda p, x: splash.apply(
        {"params": p}, **x, reference_strength=1.1, capture_blocks=(3,)
    )
    with sharding.activation_sharding(mesh):
        lowered = jax.jit(splash_apply).lower(sharded_params, inputs4_sharded)
        splash4 = lowered.compile()(sharded_params, inputs4_sharded)
    splash_err = float(np.abs(ref4 - np.asarray(splash4[0])).max())
    splash_in_shard_map = "shard_map" in lowered.as_text() or "sdy.manual_computation" in (
        lowered.as_text()
    )

    # Params created directly sharded: every kernel (>= 16 KiB here) is split. (An rbg key: XLA
    # compiles the initializers several times faster than with threefry.)
    created = sharding.init_sharded(model, jax.random.key(0, impl="rbg"), inputs, mesh)
    created_replicated = sharding.fully_replicated_large_arrays(created, min_bytes=16 * 1024)

    # Under fsdp, every weight of 1 MiB or more of a ~40M config must be split.
    cfg40 = TransformerConfig.from_dict(small_40m.get_config().model)
    model40 = Transformer(cfg40)
    fsdp_mesh = sharding.create_mesh([1, 8, 1])
    abstract = jax.eval_shape(
        lambda: model40.init(jax.random.key(0), **example_inputs(cfg40, grid=(8, 8), text_len=8))
    )["params"]
    shard40 = sharding.tree_shardings(abstract, fsdp_mesh)
    structs = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.tree.map(lambda x: x, __import__("flax").linen.meta.unbox(abstract)),
        shard40,
    )
    replicated = sharding.fully_replicated_large_arrays(structs)

    # The check fails on a replicated 1 MiB weight and passes once that weight is split.
    spec = jax.sharding.PartitionSpec
    weight = np.zeros((1024, 256), np.float32)  # 1 MiB
    put = lambda s: jax.device_put(weight, jax.sharding.NamedSharding(fsdp_mesh, s))
    split_tree = {"block": {"kernel": put(spec("fsdp", None))}}
    sharding.assert_params_sufficiently_sharded(split_tree)  # must not raise
    try:
        sharding.assert_params_sufficiently_sharded({**split_tree, "head": {"kernel": put(spec())}})
        replicated_error = None
    except AssertionError as error:
        replicated_error = str(error)
    print(
        json.dumps(
            dict(
                logits_err=logits_err,
                capture_err=capture_err,
                batch_err=batch_err,
                splash_err=splash_err,
                splash_in_shard_map=splash_in_shard_map,
                num_split=len(split),
                num_params=len(jax.tree.leaves(params)),
                replicated_large=replicated,
                created_replicated=created_replicated,
                created_num_params=sum(x.size for x in jax.tree.leaves(created)),
                num_params_40m=sum(x.size for x in jax.tree.leaves(structs)),
                replicated_error=replicated_error,
            )
        )
    )


if __name__ == "__main__":
    main()
