"""Decoder schedules: how many tokens stay masked, the re-masking temperature, the timesteps.

Step `i` of `N` (0-based) reveals tokens; after it, `mask_len(i)` of the `L` editable tokens are
masked again:

    cosine: floor(L * cos(pi/2 * (i + 1) / N))        linear: floor(L * (1 - (i + 1) / N))

clamped to [1, unknown - 1] as official (reveal at least one token per step, except that one token
stays masked until the last step once only one is left; never more than `unknown`), and 0 at the
last step, which keeps every sample. The float32 arithmetic follows the official
`Scheduler.step` (src/scheduler.py), so the counts are the official ones bit for bit when all tokens
start masked.

Timesteps given to the transformer (DESIGN section 4):
- `official`: the countdown index N-1-i, as the official pipeline passes it (the model multiplies
  it by 1000).
- `mask_ratio`: the fraction of the token grid that is masked in the model's input, in [0, 1] (our
  models: the same quantity as in training).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MASK_SCHEDULES = ("cosine", "linear")
TIMESTEP_CONVENTIONS = ("official", "mask_ratio")


def _check_schedule(schedule: str) -> None:
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"Unknown mask schedule {schedule!r}; expected one of {MASK_SCHEDULES}")


def _check_num_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def mask_ratio(step: jax.Array | int, num_steps: int, schedule: str = "cosine") -> jax.Array:
    """Fraction of the editable tokens left masked after step `step` (before clamping), float32 [].

    Example:
        >>> float(mask_ratio(1, 4, "linear"))
        0.5
    """
    _check_schedule(schedule)
    _check_num_steps(num_steps)
    # Same op order and dtype as the official scheduler: ratio = (i+1)/N in float32.
    ratio = (jnp.asarray(step, jnp.int32) + 1).astype(jnp.float32) / jnp.float32(num_steps)
    if schedule == "cosine":
        return jnp.cos(ratio * jnp.float32(math.pi) / 2)
    return 1 - ratio


def mask_len(
    step: jax.Array | int,
    num_steps: int,
    total: jax.Array,
    unknown: jax.Array,
    schedule: str = "cosine",
) -> jax.Array:
    """Number of tokens to re-mask after step `step`.

    Args:
        step: int32 [], the 0-based step.
        num_steps: N, static.
        total: int [B], L = editable tokens per sample (all tokens unless a user mask limits the
            edit).
        unknown: int [B], tokens masked in the input of this step.
        schedule: "cosine" or "linear".

    Returns:
        int32 [B]: floor(L * ratio) clamped to [1, unknown - 1], never more than `unknown` (0 when
        nothing is masked), and 0 at the last step.

    Example:
        >>> [int(mask_len(i, 4, jnp.array([16]), jnp.array([16]))[0]) for i in range(4)]
        [14, 11, 6, 0]
    """
    total = jnp.asarray(total, jnp.int32)
    unknown = jnp.asarray(unknown, jnp.int32)
    scheduled = jnp.floor(total.astype(jnp.float32) * mask_ratio(step, num_steps, schedule))
    scheduled = scheduled.astype(jnp.int32)
    n = jnp.maximum(1, jnp.minimum(unknown - 1, scheduled))
    # The official clamp would mask a known token when nothing is left to reveal.
    n = jnp.minimum(n, unknown)
    return jnp.where(jnp.asarray(step) >= num_steps - 1, 0, n)


def masked_counts(total: int, num_steps: int, schedule: str = "cosine") -> list[int]:
    """Tokens still masked after each step when `total` tokens start masked: a list of N ints, last
    0.

    Example:
        >>> masked_counts(16, 4)
        [14, 11, 6, 0]
    """
    counts, unknown = [], total
    for i in range(num_steps):
        unknown = int(mask_len(i, num_steps, jnp.array([total]), jnp.array([unknown]), schedule)[0])
        counts.append(unknown)
    return counts


def temperatures(
    num_steps: int, temperature: float | tuple[float, float] = (2.0, 0.0)
) -> jax.Array:
    """Gumbel-noise scale of the re-masking confidence per step, float32 [N].

    A pair (start, end) gives linspace(start, end, N) (default 2 -> 0); a single number t gives
    linspace(t, 0.01, N), as the official `Scheduler.set_timesteps`.

    Example:
        >>> [round(float(t), 3) for t in temperatures(5)]
        [2.0, 1.5, 1.0, 0.5, 0.0]
    """
    _check_num_steps(num_steps)
    if isinstance(temperature, tuple | list):
        if len(temperature) != 2:
            raise ValueError(
                f"temperature must be a number or a (start, end) pair, got {temperature!r}"
            )
        start, end = temperature
    else:
        start, end = temperature, 0.01
    return jnp.linspace(float(start), float(end), num_steps, dtype=jnp.float32)


def timestep(
    step: jax.Array | int,
    num_steps: int,
    masked_fraction: jax.Array,
    convention: str = "official",
) -> jax.Array:
    """The transformer's timestep for step `step`, float32 [B].

    Args:
        step: int32 [], the 0-based step.
        num_steps: N, static.
        masked_fraction: float32 [B], masked tokens / all tokens of the grid in this step's input.
        convention: "official" (countdown N-1-i for every sample) or "mask_ratio"
            (`masked_fraction`).

    Example:
        >>> timestep(0, 16, jnp.ones(2)).tolist()
        [15.0, 15.0]
    """
    masked_fraction = jnp.asarray(masked_fraction, jnp.float32)
    if convention == "official":
        countdown = (num_steps - 1 - jnp.asarray(step, jnp.int32)).astype(jnp.float32)
        return jnp.broadcast_to(countdown, masked_fraction.shape)
    if convention == "mask_ratio":
        return masked_fraction
    raise ValueError(
        f"Unknown timestep convention {convention!r}; expected one of {TIMESTEP_CONVENTIONS}"
    )
