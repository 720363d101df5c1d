"""Mask schedules, temperatures and timestep conventions of the decoder."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.sampling import schedule


def _official_mask_len(total: int, num_steps: int, step: int, kind: str) -> int:
    """The official `Scheduler.step` arithmetic (float32 torch ops) written with numpy float32."""
    ratio = np.float32(step + 1) / np.float32(num_steps)
    if kind == "cosine":
        mask_ratio = np.cos(ratio * np.float32(math.pi) / np.float32(2))
    else:
        mask_ratio = np.float32(1) - ratio
    return int(np.floor(np.float32(total) * mask_ratio))


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_mask_len_matches_official_formula(kind):
    for total in (16, 64, 256, 1024, 4096):
        for steps in (4, 8, 12, 16, 36, 48):
            unknown = total
            for i in range(steps):
                got = int(
                    schedule.mask_len(i, steps, jnp.array([total]), jnp.array([unknown]), kind)[0]
                )
                if i == steps - 1:
                    want = 0
                else:
                    want = max(1, min(unknown - 1, _official_mask_len(total, steps, i, kind)))
                assert got == want, (kind, total, steps, i)
                unknown = got


def test_hand_values_and_clamps():
    assert schedule.masked_counts(16, 4) == [14, 11, 6, 0]
    assert schedule.masked_counts(16, 4, "linear") == [12, 8, 4, 0]
    # Few tokens: the clamp keeps at least one masked (official), the last step reveals the rest.
    assert schedule.masked_counts(3, 6) == [2, 1, 1, 1, 1, 0]
    lens = schedule.mask_len(0, 8, jnp.array([100, 100, 100]), jnp.array([100, 5, 0]))
    assert lens.tolist() == [98, 4, 0]  # floor(100 cos(pi/16)) = 98; unknown - 1; nothing masked
    assert float(schedule.mask_ratio(1, 4, "linear")) == 0.5
    np.testing.assert_allclose(float(schedule.mask_ratio(1, 4)), math.cos(math.pi / 4), rtol=1e-6)


def test_temperatures():
    np.testing.assert_allclose(schedule.temperatures(5), [2.0, 1.5, 1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(schedule.temperatures(3, (1.0, 3.0)), [1.0, 2.0, 3.0], atol=1e-6)
    # A single number t means linspace(t, 0.01), as the official scheduler.
    np.testing.assert_allclose(schedule.temperatures(2, 4.5), [4.5, 0.01], atol=1e-6)
    assert schedule.temperatures(1).tolist() == [2.0]


def test_timestep_conventions():
    frac = jnp.array([1.0, 0.25])
    assert schedule.timestep(0, 16, frac, "official").tolist() == [15.0, 15.0]
    assert schedule.timestep(15, 16, frac, "official").tolist() == [0.0, 0.0]
    assert schedule.timestep(3, 16, frac, "mask_ratio").tolist() == [1.0, 0.25]


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="'square'"):
        schedule.mask_ratio(0, 4, "square")
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        schedule.temperatures(0)
    with pytest.raises(ValueError, match="'seconds'"):
        schedule.timestep(0, 4, jnp.ones(1), "seconds")
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
        schedule.temperatures(4, (1, 2, 3))
