"""Transformer forward speed: one JSON line per (config, grid, batch).

    python -m benchmarks.transformer_forward                       # the default sweep
    python -m benchmarks.transformer_forward --configs=editmgt_1b --grids=64 --batches=1 \
        --dtype=bfloat16                                           # the 1B model at 1024 px (GPU)

Random weights; the source image stream is on (as in editing); 256 text tokens. Reports compile
time, the median of `--runs` timed forwards, and image tokens per second (input grid tokens).
"""

from __future__ import annotations

import importlib
import json
import statistics
import time

import flax.linen as nn
import jax
from absl import app, flags

from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs

_CONFIGS = flags.DEFINE_list(
    "configs", ["official_tiny", "small_40m"], "Config modules in configs/."
)
_GRIDS = flags.DEFINE_list("grids", ["16", "32"], "Token grid sides.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed forwards per configuration.")
_TEXT_LEN = flags.DEFINE_integer("text_len", 256, "Text tokens.")


def bench(name: str, grid: int, batch: int) -> dict:
    module = importlib.import_module(f"configs.{name}")
    cfg = TransformerConfig.from_dict(module.get_config().model).replace(dtype=_DTYPE.value)
    model = Transformer(cfg)
    inputs = example_inputs(cfg, batch=batch, grid=(grid, grid), text_len=_TEXT_LEN.value)
    params = jax.jit(lambda k: nn.meta.unbox(model.init(k, **inputs)["params"]))(jax.random.key(0))
    forward = jax.jit(lambda p, x: model.apply({"params": p}, **x))
    start = time.perf_counter()
    compiled = forward.lower(params, inputs).compile()
    compile_s = time.perf_counter() - start
    compiled(params, inputs).block_until_ready()  # warm-up
    times = []
    for _ in range(_RUNS.value):
        start = time.perf_counter()
        compiled(params, inputs).block_until_ready()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(
        benchmark="transformer_forward",
        config=name,
        params=sum(x.size for x in jax.tree.leaves(params)),
        grid=grid,
        batch=batch,
        dtype=_DTYPE.value,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        compile_s=round(compile_s, 3),
        median_forward_s=round(median, 5),
        tokens_per_s=round(batch * grid * grid / median, 1),
    )


def main(argv):
    del argv
    for name in _CONFIGS.value:
        for grid in map(int, _GRIDS.value):
            for batch in map(int, _BATCHES.value):
                print(json.dumps(bench(name, grid, batch)), flush=True)


if __name__ == "__main__":
    app.run(main)
