"""Adam scalings whose moments take less memory than float32 Adam's 8 bytes per parameter.

Each is an optax `GradientTransformation` that replaces `optax.scale_by_adam` (the same update,
m_hat / (sqrt(v_hat) + eps) with bias-corrected moments), so weight decay, the learning rate,
clipping and `optax.MultiSteps` chain around it as around Adam (`optimizer.make_optimizer`):

  scale_by_adam_bf16      both moments in bfloat16 (4 bytes per parameter)
  scale_by_adam_int8      both moments as 8-bit codes with float32 scales per block of 256
                          (about 2.03 bytes per parameter), like bitsandbytes' AdamW8bit
  scale_by_adam_factored  first moment in bfloat16, second moment as float32 row and column
                          means for matrices, Adafactor-style (about 2 bytes per parameter)

The math is float32 throughout: the stored moments are decoded, updated with this step's gradient,
used for this step's update and only then encoded again for the next step.

Sharding: every state leaf has its parameter's rank, so when `init` maps over a tree of
`nn.LogicallyPartitioned` parameters each leaf inherits the parameter's logical axis names and
`sharding.tree_shardings` gives it a valid spec. Codes and bfloat16 moments have the parameter's
shape (sharded exactly like it); block scales ([..., ceil(n / 256)]) and factored statistics
(one dimension reduced to 1) keep the other dimensions, which stay sharded, while a dimension whose
size no longer divides its mesh axes is replicated (`sharding.logical_to_mesh_spec`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from editmgt_jax.common_types import Array

# The 8-bit codes are power-companded against a block's largest magnitude s: linear in
# (|x| / s)^(1/p), so that entries far below the block's largest keep distinct codes (a linear code
# would zero every |x| < s / 254). First moment, int8: q ~ 127 sign(x) (|x| / s)^(1/2). Second
# moment (~ m^2, so the same companding of the gradient's scale), uint8: q ~ 255 (x / s)^(1/4).
# Chosen by the update error vs float32 Adam after 3000 steps of gradient streams with log-normal
# per-column scales (log std 0 to 1.5; as benchmarks/optimizer_state.py's "drift", one moment
# coded at a time): v alone, 6-14% RMS with this code vs 11-16% with a logarithmic one (8 steps per
# octave); m alone, 1.5-2% with this code up to log std 0.5 (15% at 1.5) vs 5% logarithmic and
# 1.5-60% linear.
SIGNED_LEVELS, SIGNED_POWER = 127, 2
UNSIGNED_LEVELS, UNSIGNED_POWER = 255, 4
# Rounding is to the nearest code except where that would enlarge the update by more than 20%:
# near the bottom of a block's range a code step is a large relative step, and the nearest code
# could decode a second moment several times too small (or a first moment several times too
# large): m / sqrt(v) would overshoot. There the code moves one step the safe way: a second moment
# is never decoded below 0.8 x (so never to 0 for x > 0, where m / (sqrt(0) + eps) would blow up)
# and a first moment never above 1.2 |x|. (10% biased the updates low on streams with widely
# spread per-column scales, 30% and more let single coordinates overshoot more.)
SAFE_ROUNDING = 0.2
# Adafactor's epsilon_1: added to g^2 so that an all-zero row or column cannot give 0 / 0.
FACTORED_EPS = 1e-30


class Bf16AdamState(NamedTuple):
    """count: int32 [], steps taken; mu, nu: bfloat16 moments, the parameters' shapes."""

    count: Array
    mu: Any
    nu: Any


class Int8AdamState(NamedTuple):
    """State of `scale_by_adam_int8`; every tree but `count` has the parameters' structure.

    count: int32 [], steps taken.
    mu / nu: int8 / uint8 codes of the first / second moment, the parameters' shapes (float32
      moments for parameters too small to quantize).
    mu_scale / nu_scale: float32 [..., ceil(n / block)] block scales (the parameters' leading
      shape, n its last dimension); [1] * ndim placeholders for the float32 ones.
    """

    count: Array
    mu: Any
    nu: Any
    mu_scale: Any
    nu_scale: Any


class FactoredAdamState(NamedTuple):
    """State of `scale_by_adam_factored`; every tree but `count` has the parameters' structure.

    count: int32 [], steps taken.
    mu: bfloat16 first moments, the parameters' shapes.
    nu: float32 second moments of the parameters that are not factored ([1] * ndim placeholders
      for those that are).
    nu_row / nu_col: float32 averages of g^2's row / column means: the parameter's shape with the
      column / row axis reduced to 1 ([1] * ndim placeholders when not factored).
    """

    count: Array
    mu: Any
    nu: Any
    nu_row: Any
    nu_col: Any


# --- blockwise 8-bit codes -------------------------------------------------------------------


def _blocked(x: Array, block_size: int) -> Array:
    """[..., n] -> [..., nb, b] with b = min(block_size, n), zero-padded to nb * b."""
    n = x.shape[-1]
    b = min(block_size, n)
    nb = -(-n // b)
    if nb * b != n:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, nb * b - n)])
    return x.reshape(*x.shape[:-1], nb, b)


def _unblocked(xb: Array, n: int) -> Array:
    """[..., nb, b] -> [..., n] (drops the padding)."""
    return xb.reshape(*xb.shape[:-2], -1)[..., :n]


def block_scale_shape(shape: tuple[int, ...], block_size: int) -> tuple[int, ...]:
    """The scales' shape for codes of `shape`: the last axis cut into blocks of `block_size`."""
    n = shape[-1]
    return (*shape[:-1], -(-n // min(block_size, n)))


def quantize_signed(x: Array, block_size: int = 256) -> tuple[Array, Array]:
    """float [..., n] -> (int8 codes [..., n], float32 absmax scales [..., ceil(n / b)]).

    Square-root companded: with c = 127 sqrt(|x| / s) (s the block's absmax), |q| is round(c), or
    one less where round(c) would decode above 1.2 |x|: so |q| - c is in (-1, 0.5] and
    |decoded| <= 1.2 |x|. The block's largest entry and zeros are exact; signs are kept (or x is 0).
    """
    n = x.shape[-1]
    xb = _blocked(x.astype(jnp.float32), block_size)
    scale = jnp.max(jnp.abs(xb), axis=-1)
    safe = jnp.where(scale > 0, scale, 1.0)[..., None]
    ratio = jnp.abs(xb) / safe
    q = jnp.round(SIGNED_LEVELS * ratio ** (1.0 / SIGNED_POWER))
    too_big = (q / SIGNED_LEVELS) ** SIGNED_POWER > (1.0 + SAFE_ROUNDING) * ratio
    q = jnp.where(too_big, q - 1.0, q) * jnp.sign(xb)
    return _unblocked(q.astype(jnp.int8), n), scale


def dequantize_signed(codes: Array, scale: Array, block_size: int = 256) -> Array:
    """(int8 [..., n], float32 [..., nb]) of `quantize_signed` -> float32 [..., n]."""
    n = codes.shape[-1]
    q = _blocked(codes.astype(jnp.float32), block_size)
    x = jnp.sign(q) * (jnp.abs(q) / SIGNED_LEVELS) ** SIGNED_POWER * scale[..., None]
    return _unblocked(x, n)


def quantize_nonnegative(x: Array, block_size: int = 256) -> tuple[Array, Array]:
    """float [..., n] >= 0 -> (uint8 codes [..., n], float32 max scales [..., ceil(n / b)]).

    Fourth-root companded: with c = 255 (x / s)^(1/4) (s the block's max), q is round(c), or one
    more where round(c) would decode below 0.8 x: so q - c is in [-0.5, 1) and decoded >= 0.8 x
    (> 0 for any x > 0). 0 and the block's largest entry are exact.
    """
    n = x.shape[-1]
    xb = _blocked(x.astype(jnp.float32), block_size)
    scale = jnp.max(xb, axis=-1)
    safe = jnp.where(scale > 0, scale, 1.0)[..., None]
    ratio = xb / safe
    q = jnp.round(UNSIGNED_LEVELS * ratio ** (1.0 / UNSIGNED_POWER))
    too_small = (q / UNSIGNED_LEVELS) ** UNSIGNED_POWER < (1.0 - SAFE_ROUNDING) * ratio
    q = jnp.where(too_small, q + 1.0, q)
    return _unblocked(q.astype(jnp.uint8), n), scale


def dequantize_nonnegative(codes: Array, scale: Array, block_size: int = 256) -> Array:
    """(uint8 [..., n], float32 [..., nb]) of `quantize_nonnegative` -> float32 [..., n]."""
    n = codes.shape[-1]
    q = _blocked(codes.astype(jnp.float32), block_size)
    x = (q / UNSIGNED_LEVELS) ** UNSIGNED_POWER * scale[..., None]
    return _unblocked(x, n)


# --- shared pieces ---------------------------------------------------------------------------


def _bias_corrections(count: Array, b1: float, b2: float) -> tuple[Array, Array]:
    """(1 - b1^t, 1 - b2^t) in float32 for t = `count` (int32 [], already incremented)."""
    t = count.astype(jnp.float32)
    return 1.0 - jnp.float32(b1) ** t, 1.0 - jnp.float32(b2) ** t


def _adam_direction(m: Array, v: Array, bc1: Array, bc2: Array, eps: float) -> Array:
    """Adam's m_hat / (sqrt(v_hat) + eps), float32, as optax.scale_by_adam computes it."""
    return (m / bc1) / (jnp.sqrt(v / bc2) + eps)


def _stochastic_round_bf16(x: Array, key: Array) -> Array:
    """float32 -> bfloat16, rounding up with probability (the distance to the lower value) / ulp.

    Unbiased: E[result] = x. Round-to-nearest would freeze a slowly moving average: with
    b2 = 0.999, v * b2 moves v by 0.1%, less than half a bfloat16 ulp (0.2-0.4%), so v could
    never decay and would only ratchet up on large gradients. x: finite, any shape.
    """
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    noise = jax.random.bits(key, x.shape, jnp.uint32) & jnp.uint32(0xFFFF)
    rounded = (bits + noise) & jnp.uint32(0xFFFF0000)  # bfloat16 keeps the top 16 bits
    return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)


def _map_leaves(fn: Callable[..., tuple], updates: Any, *trees: Any) -> tuple[Any, ...]:
    """Applies fn(index, update_leaf, *state_leaves) -> tuple per leaf; returns one tree per
    output, each with `updates`' structure."""
    leaves, treedef = jax.tree.flatten(updates)
    others = [treedef.flatten_up_to(t) for t in trees]
    outs = [fn(i, leaf, *rest) for i, (leaf, *rest) in enumerate(zip(leaves, *others, strict=True))]
    return tuple(treedef.unflatten(list(o)) for o in zip(*outs, strict=True))


# Leaves of the parameter's shape are made with zeros_like: outside jit (warm_start's fresh
# moments) they then keep the parameter's sharding instead of landing whole on one device.


def _placeholder(x: Array) -> Array:
    """float32 [1] * ndim: a state slot a parameter does not use, of its rank (so its logical
    axis names still apply; size-1 dimensions are never split)."""
    return jnp.zeros((1,) * x.ndim, jnp.float32)


# --- bfloat16 --------------------------------------------------------------------------------


def scale_by_adam_bf16(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    stochastic_rounding: bool = True,
    seed: int = 0,
) -> optax.GradientTransformation:
    """Adam with both moments stored in bfloat16 (4 bytes per parameter instead of 8).

    The first moment is rounded to nearest (it moves by 10% of the gradient each step, far more
    than a bfloat16 ulp); the second moment is rounded stochastically (see
    `_stochastic_round_bf16`) unless `stochastic_rounding=False`. The random bits come from
    `seed`, the step count and the leaf's position, so a resumed run rounds as the original did.
    """

    def init(params):
        return Bf16AdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, jnp.bfloat16), params),
            nu=jax.tree.map(lambda p: jnp.zeros_like(p, jnp.bfloat16), params),
        )

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        bc1, bc2 = _bias_corrections(count, b1, b2)
        step_key = jax.random.fold_in(jax.random.key(seed), count)

        def leaf(i, g, mu, nu):
            g32 = g.astype(jnp.float32)
            m = b1 * mu.astype(jnp.float32) + (1 - b1) * g32
            v = b2 * nu.astype(jnp.float32) + (1 - b2) * g32 * g32
            if stochastic_rounding:
                new_nu = _stochastic_round_bf16(v, jax.random.fold_in(step_key, i))
            else:
                new_nu = v.astype(jnp.bfloat16)
            direction = _adam_direction(m, v, bc1, bc2, eps).astype(g.dtype)
            return direction, m.astype(jnp.bfloat16), new_nu

        directions, mu, nu = _map_leaves(leaf, updates, state.mu, state.nu)
        return directions, Bf16AdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


# --- int8 ------------------------------------------------------------------------------------


def scale_by_adam_int8(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    block_size: int = 256,
    min_quantized_size: int = 4096,
) -> optax.GradientTransformation:
    """Adam with both moments as blockwise 8-bit codes (about 2 + 8 / block_size bytes/param).

    First moment: int8 `quantize_signed`; second moment: uint8 `quantize_nonnegative`; each with
    one float32 scale per `block_size` entries along the last axis (the block's absmax / max, so
    the largest entry of every block is exact and a block's codes follow its own range). Rounding
    is to nearest: the codes are relative to the block's scale, which is exact, so the common
    decay of a block (v * b2) is kept exactly (stochastic rounding of an 8-bit logarithmic code
    measured no better: its noise accumulates in the slow average, b2 = 0.999).
    Parameters with fewer than `min_quantized_size` entries (biases, norm gains: a negligible
    share of the memory) keep float32 moments, as bitsandbytes does below 4096.
    """

    def quantized(p) -> bool:
        return p.ndim >= 1 and math.prod(p.shape) >= min_quantized_size

    def init(params):
        def codes(p, dtype):
            return jnp.zeros_like(p, dtype if quantized(p) else jnp.float32)

        def scale(p):
            if not quantized(p):
                return _placeholder(p)
            return jnp.zeros(block_scale_shape(p.shape, block_size), jnp.float32)

        return Int8AdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(lambda p: codes(p, jnp.int8), params),
            nu=jax.tree.map(lambda p: codes(p, jnp.uint8), params),
            mu_scale=jax.tree.map(scale, params),
            nu_scale=jax.tree.map(scale, params),
        )

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        bc1, bc2 = _bias_corrections(count, b1, b2)

        def leaf(i, g, mu, nu, mu_scale, nu_scale):
            del i
            g32 = g.astype(jnp.float32)
            if quantized(g):
                m_old = dequantize_signed(mu, mu_scale, block_size)
                v_old = dequantize_nonnegative(nu, nu_scale, block_size)
            else:
                m_old, v_old = mu, nu
            m = b1 * m_old + (1 - b1) * g32
            v = b2 * v_old + (1 - b2) * g32 * g32
            direction = _adam_direction(m, v, bc1, bc2, eps).astype(g.dtype)
            if not quantized(g):
                return direction, m, v, mu_scale, nu_scale
            mu, mu_scale = quantize_signed(m, block_size)
            nu, nu_scale = quantize_nonnegative(v, block_size)
            return direction, mu, nu, mu_scale, nu_scale

        directions, mu, nu, mu_scale, nu_scale = _map_leaves(
            leaf, updates, state.mu, state.nu, state.mu_scale, state.nu_scale
        )
        return directions, Int8AdamState(
            count=count, mu=mu, nu=nu, mu_scale=mu_scale, nu_scale=nu_scale
        )

    return optax.GradientTransformation(init, update)


# --- factored --------------------------------------------------------------------------------


def factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> tuple[int, int] | None:
    """(row axis, column axis) of the two largest dimensions (row < column), or None when the
    array has fewer than 2 dimensions or the smaller of the two is below the threshold."""
    if len(shape) < 2:
        return None
    order = np.argsort(np.asarray(shape), kind="stable")
    row, col = sorted(int(a) for a in order[-2:])
    if min(shape[row], shape[col]) < min_dim_size_to_factor:
        return None
    return row, col


def scale_by_adam_factored(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    min_dim_size_to_factor: int = 128,
) -> optax.GradientTransformation:
    """Adam with a bfloat16 first moment and an Adafactor-style factored second moment.

    For a parameter whose two largest dimensions (rows R, columns C) are both at least
    `min_dim_size_to_factor`, v is kept as exponential averages of the row means r [.., R, 1]
    and column means c [.., 1, C] of g^2 + 1e-30 (float32, with keepdims so they keep the
    parameter's rank) and rebuilt as v = r c / mean(r) (the rank-1 fit Adafactor uses, exact
    when g^2 is rank 1); other parameters keep a full float32 v. The bias corrections and
    m_hat / (sqrt(v_hat) + eps) are Adam's (b2 here is Adam's, not Adafactor's step-dependent
    decay), and there is no update clipping: this changes only how v is stored.
    """

    def init(params):
        def full(p):
            if factored_dims(p.shape, min_dim_size_to_factor) is None:
                return jnp.zeros_like(p, jnp.float32)
            return _placeholder(p)

        def stat(p, axis_of):
            dims = factored_dims(p.shape, min_dim_size_to_factor)
            if dims is None:
                return _placeholder(p)
            shape = list(p.shape)
            shape[dims[axis_of]] = 1
            return jnp.zeros(shape, jnp.float32)

        return FactoredAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, jnp.bfloat16), params),
            nu=jax.tree.map(full, params),
            nu_row=jax.tree.map(lambda p: stat(p, 1), params),  # columns reduced
            nu_col=jax.tree.map(lambda p: stat(p, 0), params),  # rows reduced
        )

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        bc1, bc2 = _bias_corrections(count, b1, b2)

        def leaf(i, g, mu, nu, nu_row, nu_col):
            del i
            g32 = g.astype(jnp.float32)
            m = b1 * mu.astype(jnp.float32) + (1 - b1) * g32
            dims = factored_dims(g.shape, min_dim_size_to_factor)
            if dims is None:
                v = b2 * nu + (1 - b2) * g32 * g32
                direction = _adam_direction(m, v, bc1, bc2, eps)
                return direction.astype(g.dtype), m.astype(jnp.bfloat16), v, nu_row, nu_col
            row, col = dims
            g2 = g32 * g32 + FACTORED_EPS
            nu_row = b2 * nu_row + (1 - b2) * jnp.mean(g2, axis=col, keepdims=True)
            nu_col = b2 * nu_col + (1 - b2) * jnp.mean(g2, axis=row, keepdims=True)
            v = nu_row * nu_col / jnp.mean(nu_row, axis=row, keepdims=True)
            direction = _adam_direction(m, v, bc1, bc2, eps)
            return direction.astype(g.dtype), m.astype(jnp.bfloat16), nu, nu_row, nu_col

        directions, mu, nu, nu_row, nu_col = _map_leaves(
            leaf, updates, state.mu, state.nu, state.nu_row, state.nu_col
        )
        return directions, FactoredAdamState(
            count=count, mu=mu, nu=nu, nu_row=nu_row, nu_col=nu_col
        )

    return optax.GradientTransformation(init, update)
