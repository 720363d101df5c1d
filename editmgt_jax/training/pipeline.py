"""Host batches of images and instructions -> the token/text arrays the train step consumes.

The VQ tokenizer and the text encoder are frozen: tokens come from a jitted encode (or straight
from pre-tokenized shards); instruction states come from the text encoder the config names
(`text_encoder.kind`: minilm, clip or clip_gemma2), either cached per instruction on the host
(`text_encoder.cache`, the embedded model's small world) or encoded per batch on the mesh
(`editmgt_jax.training.text_conditioning`, the released model's recipe).

Where the parts come from: the VQ from `vq_checkpoint` (a diffusers folder), else from `config.vq`
(random, smoke runs), else from the `init_from` bundle; CLIP + Gemma 2 from the `init_from`
bundle (a converted release) or `text_encoder.folder` (a released folder).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from editmgt_jax.checkpoint import load_vq
from editmgt_jax.checkpoint.bundle import is_bundle, load_bundle_part, read_manifest
from editmgt_jax.common_types import to_dtype
from editmgt_jax.models.vq import VQConfig, VQModel
from editmgt_jax.training.text_conditioning import TextConditioning

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
        """The VQ and the frozen text encoder the config names (module docstring)."""
        init_bundle = config.init_from if is_bundle(config.get("init_from", "")) else None
        if config.get("vq_checkpoint"):
            model, params = load_vq(config.vq_checkpoint)
        elif config.get("vq"):
            model = VQModel(VQConfig(**config.vq))
            dummy = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
            # An rbg key: XLA compiles the initializers several times faster than with threefry.
            key = jax.random.key(config.seed, impl="rbg")
            params = jax.jit(model.init)(key, dummy)["params"]
        elif init_bundle:
            model, params = load_vq(init_bundle)  # the bundle's VQ
        else:
            raise ValueError(
                "No VQ tokenizer: set vq_checkpoint (a diffusers VQ folder), config.vq (a random "
                "one) or init_from (a bundle, whose VQ is used)"
            )
        encoder = text_encoder_for(config.text_encoder, init_bundle)
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

    def batch(self, host: dict[str, Any]) -> dict[str, np.ndarray]:
        """A loader batch -> the train step's batch (this host's part, host arrays; the text
        states through the host cache)."""
        batch = self.image_batch(host)
        batch["text_states"], batch["pooled"] = self.text([str(s) for s in host["instruction"]])
        return batch

    def conditioning(self, mesh, batch_sharding, cache: bool) -> TextConditioning:
        """The text encoder on the training mesh: cached per instruction on the host, or (cache
        False) encoded per batch with its weights sharded over the mesh."""
        return TextConditioning(
            self.text_encoder, mesh, batch_sharding, self.text if cache else None
        )

    def device_batch(
        self, host: dict[str, Any], conditioning: TextConditioning
    ) -> dict[str, jax.Array]:
        """A loader batch -> the train step's batch as global arrays on the mesh."""
        sharding = conditioning.batch_sharding
        batch = {
            k: jax.make_array_from_process_local_data(sharding, v)
            for k, v in self.image_batch(host).items()
        }
        batch["text_states"], batch["pooled"] = conditioning.global_states(
            [str(s) for s in host["instruction"]]
        )
        return batch

    def image_batch(self, host: dict[str, Any]) -> dict[str, np.ndarray]:
        """Tokens and micro-conditions of a loader batch (this host's part)."""
        if "target_tokens" in host:
            target, source = host["target_tokens"], host["source_tokens"]
        else:
            both = self._encode_images(np.concatenate([host["target"], host["source"]]))
            target, source = np.split(both, 2)
        batch = target.shape[0]
        size = float(self.image_size)
        micro = np.tile(np.float32([size, size, 0.0, 0.0, MICRO_COND_AESTHETIC]), (batch, 1))
        return dict(
            target_tokens=target.astype(np.int32),
            source_tokens=source.astype(np.int32),
            micro_conds=micro,
        )


TEXT_KINDS = ("minilm", "clip", "clip_gemma2")


def text_encoder_for(section: ml_collections.ConfigDict, init_bundle: str | None):
    """The frozen text encoder of a config's `text_encoder` section.

    minilm: the packaged all-MiniLM-L6-v2 (`max_length`). clip: CLIP alone from `folder` (a CLIP
    text folder). clip_gemma2: the `init_from` bundle's CLIP + Gemma 2 (a converted release),
    else a released folder in `folder`. `dtype` is their compute dtype (default float32).
    """
    from editmgt_jax.checkpoint import clip_encoder, clip_gemma2_encoder, minilm_encoder

    kind = section.kind
    dtype = to_dtype(section.get("dtype", "float32") or "float32")
    folder = section.get("folder", "")
    if kind == "minilm":
        return minilm_encoder(max_length=section.max_length)
    if kind == "clip":
        if not folder:
            raise ValueError("text_encoder.kind='clip' needs text_encoder.folder (a CLIP folder)")
        return clip_encoder(folder, dtype=dtype)
    if kind == "clip_gemma2":
        if init_bundle and not folder:
            from editmgt_jax.checkpoint.folder import text_encoder_from_bundle

            spec = read_manifest(init_bundle)["text_encoder"]
            params = load_bundle_part(init_bundle, "text_encoder")
            if spec.get("kind") != "clip_gemma2" or params is None:
                raise ValueError(
                    f"text_encoder.kind='clip_gemma2', but the init_from bundle {init_bundle!r} "
                    f"holds {spec.get('kind')!r} text weights"
                    + ("" if params is not None else " (no text_encoder.safetensors)")
                    + "; convert a released folder with launch.convert, or set text_encoder.folder"
                )
            return text_encoder_from_bundle(spec, params, init_bundle, dtype=dtype)
        if not folder:
            raise ValueError(
                "text_encoder.kind='clip_gemma2' needs an init_from bundle converted from a "
                "released folder (launch.convert), or text_encoder.folder (a released folder)"
            )
        return clip_gemma2_encoder(folder, dtype=dtype)
    raise ValueError(f"text_encoder.kind={kind!r}; expected one of {TEXT_KINDS}")
