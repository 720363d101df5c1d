"""Host batches of images and instructions -> the token/text arrays the train step consumes.

The VQ tokenizer and the text encoder are frozen: tokens come from a jitted encode (or straight
from pre-tokenized shards), and instruction states are cached per instruction string.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from editmgt_jax.checkpoint import load_vq
from editmgt_jax.models.vq import VQConfig, VQModel

MICRO_COND_AESTHETIC = 6.0  # the official pipeline's default aesthetic score


@dataclasses.dataclass
class TrainingInputs:
    """The frozen tokenizer and text encoder, and the per-instruction text cache."""

    vq_model: VQModel
    vq_params: Any
    text_encoder: Any
    image_size: int
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, config: ml_collections.ConfigDict) -> TrainingInputs:
        """VQ from `config.vq_checkpoint` (a diffusers-layout folder) or, when empty, randomly
        initialised from `config.vq` and `config.seed` (smoke runs); MiniLM text encoder."""
        if config.get("vq_checkpoint"):
            model, params = load_vq(config.vq_checkpoint)
        else:
            model = VQModel(VQConfig(**config.vq))
            dummy = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
            # An rbg key: XLA compiles the initializers several times faster than with threefry.
            key = jax.random.key(config.seed, impl="rbg")
            params = jax.jit(model.init)(key, dummy)["params"]
        if config.text_encoder.kind != "minilm":
            raise ValueError(
                f"text_encoder.kind={config.text_encoder.kind!r}: training supports 'minilm' "
                "(official CLIP+Gemma2 states can be precomputed into shards instead)"
            )
        from editmgt_jax.checkpoint import minilm_encoder

        encoder = minilm_encoder(max_length=config.text_encoder.max_length)
        return cls(model, params, encoder, config.image_size)

    @property
    def vq_stride(self) -> int:
        return self.vq_model.config.stride

    @property
    def text_len(self) -> int:
        return self.text_encoder.max_length

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_encode_fn"):
            model = self.vq_model
            self._encode_fn = jax.jit(
                lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids)
            )
        floats = jnp.asarray(images, jnp.float32) / 255.0
        return np.asarray(self._encode_fn(self.vq_params, floats))

    def text(self, instructions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cached (states [B, T, D], pooled [B, P]) float32."""
        missing = sorted({s for s in instructions if s not in self.cache})
        if missing:
            # Padded with "" to a power of two: the jitted encoder compiles once per batch size,
            # so a run compiles it for a handful of sizes rather than for every count that occurs.
            padded = missing + [""] * ((1 << (len(missing) - 1).bit_length()) - len(missing))
            out = self.text_encoder.encode(padded)
            states, pooled = np.asarray(out.states), np.asarray(out.pooled)
            for i, s in enumerate(missing):
                self.cache[s] = (states[i], pooled[i])
        return (
            np.stack([self.cache[s][0] for s in instructions]),
            np.stack([self.cache[s][1] for s in instructions]),
        )

    def uncond(self) -> tuple[jax.Array, jax.Array]:
        """States of the empty instruction ([T, D], [P]): the unconditional input of CFG."""
        states, pooled = self.text([""])
        return jnp.asarray(states[0]), jnp.asarray(pooled[0])

    def batch(self, host: dict[str, Any]) -> dict[str, np.ndarray]:
        """A loader batch -> the train step's batch (this host's part)."""
        if "target_tokens" in host:
            target, source = host["target_tokens"], host["source_tokens"]
        else:
            both = self._encode_images(np.concatenate([host["target"], host["source"]]))
            target, source = np.split(both, 2)
        states, pooled = self.text([str(s) for s in host["instruction"]])
        batch = target.shape[0]
        size = float(self.image_size)
        micro = np.tile(np.float32([size, size, 0.0, 0.0, MICRO_COND_AESTHETIC]), (batch, 1))
        return dict(
            target_tokens=target.astype(np.int32),
            source_tokens=source.astype(np.int32),
            text_states=states,
            pooled=pooled,
            micro_conds=micro,
        )
