"""Joint attention through the TPU splash-attention kernel (Pallas, `jax.experimental.pallas`).

The kernel never materializes the [batch, heads, L, L] logits: at 1024 px (2,304 positions) that
is the difference between hundreds of MB and under 1 MB of temporaries per layer. Two things it
does not do natively are arranged here:

* **The reference bias.** EditMGT adds log(s) to every logit between a source position and a
  non-source one (`attention.reference_bias`). With sigma = +1 on source positions and -1
  elsewhere, `[i, j cross] * log(s) = log(s) / 2 - (log(s) / 2) * sigma_i * sigma_j`; the first
  term is constant along a query row and cancels in the softmax, the second is rank one. So one
  extra head-dimension column on q (`-(log s / 2) sigma_i`) and on k (`sigma_j`) gives exactly the
  biased softmax, with log(s) a traced value. It costs a wider q.k product, so callers pass
  `log_strength=None` when s is statically 1 (training's default) and the column is left out.
* **Sharding.** A Pallas call is opaque to XLA's partitioner (it would gather q/k/v onto every
  chip), so under a mesh it runs in `shard_map`, batch over the axes `activation_batch` maps to
  and heads over `activation_heads`'s, both as the active logical rules say.

`interpret=True` runs the same kernel in the Pallas interpreter: CPU tests check it against the
einsum attention there.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
from jax.sharding import PartitionSpec

from editmgt_jax.common_types import ACT_BATCH, ACT_HEADS, Array
from editmgt_jax.sharding import context_mesh, logical_to_mesh_spec

LANES = 128  # TPU lane width: kernel blocks and head dimensions are multiples of it
BLOCK_CHOICES = (512, 256, 128)  # the largest block that wastes least padding wins


def block_size(length: int) -> int:
    """The kernel's block (query and key rows) for a sequence of `length`: the largest of
    BLOCK_CHOICES whose padding of `length` is no larger than the padding 128 would need."""
    least = -length % LANES
    return next(b for b in BLOCK_CHOICES if -length % b <= least or b == LANES)


def padded_length(length: int) -> int:
    block = block_size(length)
    return -(-length // block) * block


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, length: int, padded: int, interpret: bool):
    """A splash kernel over [heads, padded, dim] whose keys past `length` are masked out.

    Cached: building the mask's block tables is host work, the same for every layer and trace."""
    keep = np.zeros((padded, padded), dtype=np.bool_)
    keep[:, :length] = True  # padded query rows see real keys too; their rows are dropped
    mask = mask_lib.MultiHeadMask([mask_lib.NumpyMask(keep) for _ in range(heads)])
    block = block_size(length)
    sizes = kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    # Concrete block tables even when first built inside a trace: the cache outlives it.
    with jax.ensure_compile_time_eval():
        return kernel_lib.make_splash_mha(
            mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
        )


def _append_column(x: Array, column: Array, width: int) -> Array:
    """x [batch, L, heads, dim] with `column` [L] as one more feature (the same for every example
    and head), zero-padded to `width` features."""
    batch, length, heads, dim = x.shape
    extra = jnp.broadcast_to(column[None, :, None, None], (batch, length, heads, 1))
    x = jnp.concatenate([x, extra.astype(x.dtype)], -1)
    return jnp.pad(x, [(0, 0)] * 3 + [(0, width - dim - 1)])


def local_splash_attention(
    q: Array, k: Array, v: Array, num_source: int, log_strength: Array | None, interpret: bool
) -> Array:
    """Softmax attention of one device's q/k/v [batch, L, heads, head_dim] -> same shape.

    The trailing `num_source` positions are the source stream; log_strength (scalar, traced) biases
    attention between them and the rest, None meaning no bias (s = 1)."""
    batch, length, heads, head_dim = q.shape
    q = q * jnp.asarray(head_dim**-0.5, q.dtype)  # the kernel applies no scale of its own
    if log_strength is not None and num_source:
        sigma = jnp.where(jnp.arange(length) >= length - num_source, 1.0, -1.0)
        q_col = -0.5 * jnp.asarray(log_strength, jnp.float32) * sigma
        width = -(-(head_dim + 1) // LANES) * LANES
        q, k = _append_column(q, q_col, width), _append_column(k, sigma, width)
    padded = padded_length(length)
    rows = [(0, 0), (0, padded - length), (0, 0), (0, 0)]
    # [batch, L, heads, dim] -> [batch, heads, padded, dim], the kernel's layout per example.
    q, k, v = (jnp.transpose(jnp.pad(x, rows), (0, 2, 1, 3)) for x in (q, k, v.astype(q.dtype)))
    out = jax.vmap(_kernel(heads, length, padded, interpret))(q, k, v)
    return jnp.transpose(out, (0, 2, 1, 3))[:, :length]


def splash_attention(
    q: Array,
    k: Array,
    v: Array,
    num_source: int,
    log_strength: Array | None,
    interpret: bool = False,
) -> Array:
    """`local_splash_attention`, run per shard when a mesh is active (see the module docstring).

    q/k/v: [batch, L, heads, head_dim]. Returns [batch, L, heads, head_dim] in q's dtype."""
    local = functools.partial(local_splash_attention, num_source=num_source, interpret=interpret)
    mesh = context_mesh()
    if mesh is None or mesh.size == 1:
        return local(q, k, v, log_strength=log_strength)
    rules = nn.get_logical_axis_rules()
    spec = logical_to_mesh_spec((ACT_BATCH, None, ACT_HEADS, None), q.shape, mesh, rules)
    strength = jnp.zeros((), jnp.float32) if log_strength is None else log_strength
    body = functools.partial(_sharded_body, local=local, biased=log_strength is not None)
    return jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(spec, spec, spec, PartitionSpec()),
        out_specs=spec,
        check_vma=False,
    )(q, k, v, strength)


def _sharded_body(q, k, v, strength, *, local, biased):
    return local(q, k, v, log_strength=strength if biased else None)
