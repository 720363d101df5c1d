r"""VQ tokenizer speed: encode and decode images per second, one JSON line per configuration.

    python -m benchmarks.vq                                    # released layout, 256/512/1024 px
    python -m benchmarks.vq --configs=released,vq_small --sizes=256 --batch=4 --runs=3
    python -m benchmarks.vq --dtype=bfloat16                   # on TPU / GPU

`released`: the aMUSEd/Meissonic VQ layout (channels 128-256-256-512-768, 2 layers per block,
64 latent channels, 8192 codes, 16 px per token); `vq_small`: configs/vq_small.py. Random weights
(speed does not depend on them). Reports compile time, the median of `--runs` timed calls after a
warm-up, images/s and tokens/s, and the device.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from editmgt_jax.common_types import to_dtype
from editmgt_jax.models.vq import VQConfig, VQModel

_CONFIGS = flags.DEFINE_list("configs", ["released"], "released and/or vq_small.")
_SIZES = flags.DEFINE_list("sizes", ["256", "512", "1024"], "Square image sides in pixels.")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per call.")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed calls per configuration (median reported).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_OPS = flags.DEFINE_list("ops", ["encode", "decode"], "encode and/or decode.")
_WARMUP = flags.DEFINE_bool(
    "warmup", True, "One untimed call first (skip for minute-long CPU calls)."
)


def vq_config(name: str) -> VQConfig:
    if name == "released":
        return VQConfig()  # the defaults are the released layout
    if name == "vq_small":
        from configs.vq_small import get_config

        fields = dict(get_config().model)
        fields.pop("dtype"), fields.pop("param_dtype")
        return VQConfig(**fields)
    raise ValueError(f"Unknown VQ config {name!r}; expected 'released' or 'vq_small'")


def random_params(model: VQModel, seed: int = 0):
    """Random weights of the right shapes, drawn on the host (no init compile)."""
    rng = np.random.default_rng(seed)
    stride = model.config.stride
    sample = jax.ShapeDtypeStruct((1, stride, stride, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), sample)["params"]

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape).astype(np.float32))

    return jax.tree_util.tree_map(draw, shapes)


def _time(fn, *args) -> tuple[float, float]:
    """(compile seconds, median seconds per call)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    if _WARMUP.value:
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(_RUNS.value):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def bench(name: str, size: int, op: str) -> dict:
    config = vq_config(name)
    model = VQModel(config, dtype=to_dtype(_DTYPE.value))
    params = random_params(model)
    batch, grid = _BATCH.value, size // config.stride
    if op == "encode":
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids))
        inputs = jax.random.uniform(jax.random.key(0, impl="rbg"), (batch, size, size, 3))
    else:
        fn = jax.jit(lambda p, i: model.apply({"params": p}, i, method=model.decode_ids))
        inputs = jnp.asarray(
            np.random.default_rng(0).integers(0, config.num_vq_embeddings, (batch, grid, grid)),
            jnp.int32,
        )
    compile_s, median = _time(fn, params, inputs)
    device = jax.devices()[0]
    return dict(
        benchmark="vq",
        config=name,
        op=op,
        size=size,
        batch=batch,
        dtype=_DTYPE.value,
        params=int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
        compile_s=round(compile_s, 2),
        median_s=round(median, 4),
        images_per_s=round(batch / median, 3),
        tokens_per_s=round(batch * grid * grid / median, 1),
        runs=_RUNS.value,
        warmup=_WARMUP.value,
        device=f"{device.platform}:{device.device_kind}",
        num_devices=jax.device_count(),
    )


def main(argv):
    del argv
    for name in _CONFIGS.value:
        for size in (int(s) for s in _SIZES.value):
            for op in _OPS.value:
                print(json.dumps(bench(name, size, op)), flush=True)


if __name__ == "__main__":
    app.run(main)
