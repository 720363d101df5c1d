"""Parameters and AOT-compiled memory of the whole EditMGT pipeline at 1024 px, nothing allocated.

    python -m benchmarks.pipeline_memory                          # every component, fp32 and bf16
    python -m benchmarks.pipeline_memory --components=transformer,vq_encode --dtypes=bfloat16
    python -m benchmarks.pipeline_memory --nocompile              # parameter counts only
    python -m benchmarks.pipeline_memory --dtypes=bfloat16 --vq_dtype=float32   # as the editor

The released architecture, each part run as the editor runs it:
- transformer: configs/editmgt_1b.py as the sampler calls it: CFG batch 2 ([uncond; cond]), the
  source stream on, reference strength 1.1, attention captured from block 30 and reduced
  in-graph; layers unrolled as a converted bundle runs them (--scan stacks them with nn.scan).
- vq_encode / vq_decode: the diffusers VQModel in the aMUSEd/Meissonic layout (`VQConfig`
  defaults: channels 128-256-256-512-768, 2 ResNet blocks per level, 64 latent channels, 32 norm
  groups, 8192 codes, 16 px per token), encoding a 1024 x 1024 image and decoding 64 x 64 ids.
- clip: CLIP's text model with projection at the CLIP-ViT-H/14 text tower's shape (hidden 1024,
  16 heads, MLP 4096, projection 1024 = the transformer's pooled_projection_dim, 77 positions,
  --clip_layers, default 24), returning the projected pooled vector.
- gemma2: Gemma 2 2B, hidden states of the second-to-last layer for 256 tokens.

Parameters come from `jax.eval_shape` of each module's init (shapes only); each forward is lowered
with `jax.ShapeDtypeStruct` arguments and compiled ahead of time for the default backend, so no
weight is ever materialised. One JSON line per (component, dtype), then one `pipeline` line per
dtype: params resident (every component's weights, the VQ counted once) + the largest stage's
working memory (its inputs + temporaries + outputs) = what one device needs to hold all four
models and run the pipeline at batch 1 (the stages run one after another).

On XLA:CPU bf16 dots are computed in float32 (weights are upcast into temporaries), so CPU temp
figures for bf16 overstate what a GPU/TPU needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from editmgt_jax.checkpoint.bundle import DEFAULT_PIPELINE
from editmgt_jax.common_types import to_dtype
from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
from editmgt_jax.models.text.encoder import _clip_pooled, _gemma_states
from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.models.transformer_stats import abstract_params
from editmgt_jax.models.vq import VQConfig, VQModel
from editmgt_jax.sampling.transformer_fn import make_model_fn

COMPONENTS = ("transformer", "vq_encode", "vq_decode", "clip", "gemma2")
MEMORY_FIELDS = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
)
# The pipeline defaults of a converted bundle: capture block 30, reference strength 1.1.
CAPTURE_BLOCKS = tuple(DEFAULT_PIPELINE["capture_blocks"])
REFERENCE_STRENGTH = float(DEFAULT_PIPELINE["reference_strength"])


class Component(NamedTuple):
    """A forward to measure: fn(params, *inputs), abstract params and abstract inputs."""

    name: str
    fn: Callable[..., Any]
    params: Any  # tree of jax.ShapeDtypeStruct
    inputs: tuple[jax.ShapeDtypeStruct, ...]
    shared_params: str | None = None  # name of the component whose weights these are


def _spec(shape: Sequence[int], dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _cast(params: Any, dtype) -> Any:
    return jax.tree.map(lambda x: _spec(x.shape, dtype), params)


def _shapes(model: nn.Module, sample: jax.ShapeDtypeStruct, dtype) -> Any:
    """Unboxed ShapeDtypeStructs of `model`'s params, cast to `dtype` (nothing allocated)."""
    boxed = jax.eval_shape(lambda x: model.init(jax.random.key(0), x)["params"], sample)
    return _cast(nn.meta.unbox(boxed), dtype)


def transformer_component(
    cfg: TransformerConfig,
    grid: int,
    batch: int,
    text_len: int,
    capture_blocks: Sequence[int] = CAPTURE_BLOCKS,
    reference_strength: float = REFERENCE_STRENGTH,
) -> Component:
    """One sampler step's model call: [uncond; cond] (2 x batch) with the source stream."""
    b = 2 * batch
    params = _cast(abstract_params(cfg), to_dtype(cfg.param_dtype))
    model_fn = make_model_fn(cfg, capture_blocks, reference_strength)
    inputs = (
        _spec((b, grid, grid), jnp.int32),  # tokens
        _spec((b, grid, grid), jnp.int32),  # source tokens
        _spec((b, text_len, cfg.joint_attention_dim)),  # text states
        _spec((b, cfg.pooled_projection_dim)),  # pooled
        _spec((b, 5)),  # micro-conditions
        _spec((b,)),  # timestep
    )
    return Component("transformer", model_fn, params, inputs)


def _vq(cfg: VQConfig, dtype) -> tuple[VQModel, Any]:
    dtype = to_dtype(dtype)
    model = VQModel(cfg, dtype=dtype, param_dtype=dtype)
    sample = _spec((1, cfg.stride, cfg.stride, cfg.in_channels))
    return model, _shapes(model, sample, dtype)


def vq_encode_component(cfg: VQConfig, dtype, pixels: int, batch: int) -> Component:
    """Images [batch, pixels, pixels, 3] in [0, 1] -> ids, as the editor encodes the source."""
    model, params = _vq(cfg, dtype)

    def fn(p, images):
        return model.apply({"params": p}, images, method=model.encode_to_ids)

    return Component("vq_encode", fn, params, (_spec((batch, pixels, pixels, cfg.in_channels)),))


def vq_decode_component(cfg: VQConfig, dtype, grid: int, batch: int) -> Component:
    """Ids [batch, grid, grid] -> images, as the editor decodes the result."""
    model, params = _vq(cfg, dtype)

    def fn(p, ids):
        return model.apply({"params": p}, ids, method=model.decode_ids)

    return Component("vq_decode", fn, params, (_spec((batch, grid, grid), jnp.int32),), "vq_encode")


def clip_component(cfg: CLIPTextConfig, dtype, batch: int) -> Component:
    """Ids [batch, max_position_embeddings] -> projected pooled [batch, projection_dim]."""
    dtype = to_dtype(dtype)
    model = CLIPText(cfg, dtype=dtype, param_dtype=dtype)
    ids = _spec((batch, cfg.max_position_embeddings), jnp.int32)
    params = _shapes(model, _spec((1, 2), jnp.int32), dtype)
    return Component("clip", lambda p, x: _clip_pooled(model, p, x), params, (ids,))


def gemma2_component(cfg: Gemma2Config, dtype, text_len: int, batch: int) -> Component:
    """Ids [batch, text_len] -> hidden_states[-2] [batch, text_len, hidden] (no logits)."""
    dtype = to_dtype(dtype)
    model = Gemma2(cfg, dtype=dtype, param_dtype=dtype)
    ids = _spec((batch, text_len), jnp.int32)
    params = _shapes(model, _spec((1, 2), jnp.int32), dtype)
    return Component("gemma2", lambda p, x: _gemma_states(model, p, x), params, (ids,))


def param_stats(params: Any) -> tuple[int, int]:
    """(count, bytes) of a tree of arrays or ShapeDtypeStructs."""
    leaves = jax.tree.leaves(params)
    count = sum(int(x.size) for x in leaves)
    nbytes = sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in leaves)
    return count, nbytes


def input_bytes(inputs: Sequence[jax.ShapeDtypeStruct]) -> int:
    return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in inputs)


def measure(component: Component, compile: bool = True) -> dict:
    """Parameter count/bytes, and (if `compile`) the compiled forward's memory analysis."""
    count, nbytes = param_stats(component.params)
    row = dict(
        benchmark="pipeline_memory",
        component=component.name,
        dtype=str(jnp.dtype(jax.tree.leaves(component.params)[0].dtype)),
        params=count,
        param_bytes=nbytes,
        inputs=[list(x.shape) for x in component.inputs],
    )
    if component.shared_params:
        row["shares_params_with"] = component.shared_params
    if not compile:
        return row
    start = time.perf_counter()
    compiled = jax.jit(component.fn).lower(component.params, *component.inputs).compile()
    row["compile_s"] = round(time.perf_counter() - start, 1)
    analysis = compiled.memory_analysis()
    memory = {f: int(getattr(analysis, f)) for f in MEMORY_FIELDS}
    row["memory"] = memory
    # What the stage needs beyond its resident weights: its inputs, temporaries and outputs.
    # (The argument size counts only the weights the stage uses: the VQ decode does not take the
    # encoder's, nor Gemma's hidden_states[-2] the last layer's.)
    row["working_bytes"] = (
        input_bytes(component.inputs)
        + memory["temp_size_in_bytes"]
        + memory["output_size_in_bytes"]
    )
    return row


def pipeline_total(rows: Sequence[dict]) -> dict:
    """Weights of every component (shared weights once) + the largest stage's working memory."""
    resident = [r for r in rows if "shares_params_with" not in r]
    total = dict(
        benchmark="pipeline_memory",
        component="pipeline",
        components=[r["component"] for r in rows],
        params=sum(r["params"] for r in resident),
        param_bytes=sum(r["param_bytes"] for r in resident),
    )
    compiled = [r for r in rows if "working_bytes" in r]
    if compiled:
        peak = max(compiled, key=lambda r: r["working_bytes"])
        total.update(
            peak_stage=peak["component"],
            peak_working_bytes=peak["working_bytes"],
            total_bytes=total["param_bytes"] + peak["working_bytes"],
        )
    return total


def released_components(
    names: Sequence[str],
    dtype: str,
    grid: int = 64,
    batch: int = 1,
    text_len: int = 256,
    clip_layers: int = 24,
    scan: bool = False,
    vq_dtype: str | None = None,
) -> list[Component]:
    """The released architecture's components (in `names`) at this dtype and size; the VQ at
    `vq_dtype` when given (the editor runs a bundle's VQ in float32 whatever the bundle's dtype)."""
    from configs import editmgt_1b

    vq_dtype = vq_dtype or dtype
    out = []
    for name in names:
        if name == "transformer":
            fields = editmgt_1b.get_config("scan" if scan else None).model
            cfg = TransformerConfig.from_dict(fields).replace(dtype=dtype, param_dtype=dtype)
            out.append(transformer_component(cfg, grid, batch, text_len))
        elif name == "vq_encode":
            out.append(vq_encode_component(VQConfig(), vq_dtype, grid * VQConfig().stride, batch))
        elif name == "vq_decode":
            out.append(vq_decode_component(VQConfig(), vq_dtype, grid, batch))
        elif name == "clip":
            cfg = CLIPTextConfig(num_hidden_layers=clip_layers)  # hidden 1024, projection 1024
            out.append(clip_component(cfg, dtype, batch))
        elif name == "gemma2":
            out.append(gemma2_component(Gemma2Config(), dtype, text_len, batch))  # 2B defaults
        else:
            raise ValueError(f"Unknown component {name!r}; expected some of {COMPONENTS}")
    return out


def define_flags() -> None:
    """The command line's flags (defined only when run as a script, so that importing this module
    next to launch.* modules, which define some of the same names, does not collide)."""
    flags.DEFINE_list("components", list(COMPONENTS), f"Subset of {COMPONENTS}.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Param and compute dtypes.")
    flags.DEFINE_integer("grid", 64, "VQ token grid side (64 = 1024 px at 16 px per token).")
    flags.DEFINE_integer("batch", 1, "Images per edit (the transformer runs 2x for CFG).")
    flags.DEFINE_integer("text_len", 256, "Gemma text tokens.")
    flags.DEFINE_integer("clip_layers", 24, "CLIP text layers (ViT-H/14: 24).")
    flags.DEFINE_bool("scan", False, "Scan the transformer's layers (faster compile).")
    flags.DEFINE_bool("compile", True, "AOT-compile each forward (else params only).")
    flags.DEFINE_string("vq_dtype", "", "VQ dtype ('': as --dtypes; the editor uses float32).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    for dtype in f.dtypes:
        components = released_components(
            f.components, dtype, f.grid, f.batch, f.text_len, f.clip_layers, f.scan, f.vq_dtype
        )
        rows = []
        for component in components:
            row = measure(component, f.compile)
            row.update(grid=f.grid, batch=f.batch, backend=jax.default_backend())
            rows.append(row)
            print(json.dumps(row), flush=True)
        total = pipeline_total(rows)
        total.update(dtype=dtype, vq_dtype=f.vq_dtype or dtype, grid=f.grid, batch=f.batch)
        print(json.dumps(total), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
