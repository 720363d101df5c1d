"""Losses and codebook statistics for VQ training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.training import vq_losses


def test_psnr():
    target = jnp.zeros((2, 4, 4, 3))
    recon = target.at[0].set(0.1).at[1].set(2.0)  # the second is clipped to 1 first
    np.testing.assert_allclose(np.asarray(vq_losses.psnr(recon, target)), [20.0, 0.0], atol=1e-4)
    assert float(vq_losses.psnr(target, target)[0]) == pytest.approx(100.0)


def test_reconstruction_losses():
    a, b = jnp.zeros((1, 2, 2, 3)), jnp.full((1, 2, 2, 3), 0.5)
    assert float(vq_losses.l1_loss(a, b)) == pytest.approx(0.5)
    assert float(vq_losses.l2_loss(a, b)) == pytest.approx(0.25)


def test_codebook_stats():
    ids = jnp.array([[0, 0], [1, 1]])
    counts = vq_losses.code_histogram(ids, 4)
    np.testing.assert_array_equal(np.asarray(counts), [2, 2, 0, 0])
    stats = vq_losses.codebook_stats(counts)
    assert float(stats["perplexity"]) == pytest.approx(2.0)
    assert float(stats["usage"]) == pytest.approx(0.5)
    uniform = vq_losses.codebook_stats(jnp.ones(8))
    assert float(uniform["perplexity"]) == pytest.approx(8.0) and float(uniform["usage"]) == 1.0


def test_restart_dead_codes_moves_only_dead_codes():
    codebook = jnp.arange(8.0).reshape(4, 2)
    usage = jnp.array([5.0, 0.0, 3.0, 0.001])
    latents = jnp.full((2, 3, 3, 2), 100.0)
    new, new_usage, restarted = vq_losses.restart_dead_codes(
        jax.random.key(0), codebook, usage, latents, threshold=0.01, noise=0.0
    )
    assert int(restarted) == 2
    np.testing.assert_array_equal(np.asarray(new)[[0, 2]], np.asarray(codebook)[[0, 2]])
    np.testing.assert_allclose(np.asarray(new)[[1, 3]], 100.0)
    np.testing.assert_allclose(np.asarray(new_usage), [5.0, 0.01, 3.0, 0.01])


def test_hinge_losses():
    real, fake = jnp.array([2.0, 0.0]), jnp.array([-2.0, 0.5])
    assert float(vq_losses.hinge_discriminator_loss(real, fake)) == pytest.approx(
        0.5 * (0.5 + 0.75)
    )
    assert float(vq_losses.hinge_generator_loss(fake)) == pytest.approx(0.75)


def test_lpips_loads_offline_and_orders_distortions():
    module, variables = vq_losses.load_lpips("alexnet")
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32))
    slight = jnp.clip(target + 0.02 * jnp.asarray(rng.normal(size=target.shape)), 0, 1)
    heavy = jnp.clip(target + 0.3 * jnp.asarray(rng.normal(size=target.shape)), 0, 1)
    distance = jax.jit(lambda a, b: vq_losses.lpips_distance(module, variables, a, b))
    same, small, large = (np.asarray(distance(x, target)) for x in (target, slight, heavy))
    assert same.shape == (2,)
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    assert (small > 0).all() and (large > small).all()


def test_lpips_rejects_bad_inputs():
    with pytest.raises(ValueError, match="LPIPS net 'resnet'"):
        vq_losses.load_lpips("resnet")
    module, variables = vq_losses.load_lpips("alexnet")
    with pytest.raises(ValueError, match="at least 31x31; got 16x16"):
        vq_losses.lpips_distance(
            module, variables, jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3))
        )
