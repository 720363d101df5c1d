"""The Editor: images + instructions (+ masks) -> edited images, heatmaps and hold masks.

Host-side I/O and batching only; the math lives in `editmgt_jax.sampling` (the jitted sampler),
`editmgt_jax.models` (VQ, transformer, text) and `editmgt_jax.editing.images` (pixels).

    image --load (EXIF orientation, RGB)--> resize to a bucket (sides multiples of the token
    stride = VQ stride x transformer downsample) --VQ encode--> source tokens
    instruction --text encoder--> states, pooled ("" is the unconditional text for CFG)
    --decode (one jitted while_loop)--> tokens --VQ decode--> resize to the original size
    --optional paste-back of the original pixels outside the allowed region--> result

Edits are grouped by bucket shape and run in chunks of `batch_size`; a short last chunk is padded
with copies, so there is one compile per (batch, grid, steps). Every sample has its own PRNG key
(from its seed), so a result does not depend on the rest of its batch.

Example:
    >>> editor = Editor.from_bundle("/tmp/smoke_bundle")  # doctest: +SKIP
    >>> [result] = editor.edit(["in.png"], ["make the red circle blue"], seeds=0)  # doctest: +SKIP
    >>> result.image.shape == result.source.shape  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.checkpoint.bundle import DEFAULT_PIPELINE, Bundle, load_bundle
from editmgt_jax.editing import images as imio
from editmgt_jax.models.tokenizer import decode_edit, tokenizer_config, tokenizer_module
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.sampling import transformer_fn
from editmgt_jax.sampling.decode import DecodeConfig, decode, make_inputs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EditRequest:
    """One validated edit, ready to run (build it with `Editor.prepare`)."""

    source: np.ndarray  # uint8 [H, W, 3], the original pixels (EXIF-oriented RGB)
    instruction: str
    mask: np.ndarray | None  # bool [H, W] at the original size, True = may change
    query: str | None  # phrase whose text tokens localize the edit
    seed: int
    guidance: float
    hold_threshold: float
    name: str  # the input's name, for messages
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EditResult:
    """One edit. Pixel arrays are at the original size; token maps on the token grid [h, w]."""

    image: np.ndarray  # uint8 [H, W, 3], the edited image
    source: np.ndarray  # uint8 [H, W, 3], the input pixels
    heatmap: np.ndarray  # float32 [h, w], region scores (consolidated attention, [0, 1])
    hold_mask: np.ndarray  # bool [h, w], the final token came from a region-hold (= source)
    edit_mask: np.ndarray  # bool [h, w], tokens the user mask allowed to change
    source_tokens: np.ndarray  # int32 [h, w]
    tokens: np.ndarray  # int32 [h, w], the edited tokens
    bucket: tuple[int, int]  # (height, width) in pixels the model saw
    name: str
    warnings: list[str]

    def heatmap_image(self) -> np.ndarray:
        """uint8 [H, W, 3] colour map of `heatmap` at the original size."""
        return imio.heatmap_image(self.heatmap, self.source.shape[:2])

    def hold_image(self) -> np.ndarray:
        """uint8 [H, W] (255 = held) of `hold_mask` at the original size."""
        return imio.mask_image(self.hold_mask, self.source.shape[:2])


def _vq_encode(model, params, images):
    return model.apply({"params": params}, images, method=model.encode_to_ids)


def _vq_decode(model, params, ids):
    return model.apply({"params": params}, ids, method=model.decode_ids)


def text_encoder_from_spec(
    spec: dict[str, Any], text_params: Any = None, bundle_path: str | None = None
):
    """The frozen text encoder a bundle names: {"kind": "minilm", "max_length": 32},
    {"kind": "clip", "folder": CLIP text folder} (CLIP alone, Meissonic's),
    {"kind": "clip_gemma2", "folder": released EditMGT folder}, or a converted bundle's
    {"kind": "clip_gemma2", "params": "bundle", ...} (weights in `text_params`, tokenizers
    under `bundle_path`; see editmgt_jax.checkpoint.folder)."""
    from editmgt_jax.checkpoint import clip_encoder, clip_gemma2_encoder, minilm_encoder

    kind = spec.get("kind")
    if kind == "minilm":
        if text_params is not None:
            raise ValueError(
                "Bundles with MiniLM take its weights from the package, not the bundle"
            )
        return minilm_encoder(max_length=int(spec.get("max_length", 32)))
    if kind == "clip":
        if "folder" not in spec:
            raise ValueError("The bundle's text encoder is 'clip' without a 'folder'")
        return clip_encoder(spec["folder"])
    if kind == "clip_gemma2":
        if text_params is not None:
            from editmgt_jax.checkpoint.folder import text_encoder_from_bundle

            return text_encoder_from_bundle(spec, text_params, bundle_path)
        if "folder" not in spec:
            raise ValueError(
                "The bundle's text encoder is clip_gemma2 without a 'folder'; pass "
                "Editor.from_bundle(path, text_encoder=clip_gemma2_encoder(FOLDER))"
            )
        return clip_gemma2_encoder(spec["folder"])
    raise ValueError(
        f"Unknown text encoder kind {kind!r} in the bundle; expected minilm, clip or clip_gemma2"
    )


def _query_tokenizer(encoder):
    """The tokenizer whose positions index the text states (Gemma's for CLIP_Gemma2)."""
    return getattr(encoder, "gemma_tokenizer", None) or encoder.tokenizer


class Editor:
    """Edits images with a bundle's transformer, VQ and text encoder (module docstring).

    Args:
        bundle: a loaded `Bundle`.
        text_encoder: object with `encode(list[str]) -> EncodedText` (default: the bundle's).
        max_pixels: inputs with more pixels are refused.
    """

    def __init__(
        self, bundle: Bundle, text_encoder=None, max_pixels: int = imio.DEFAULT_MAX_PIXELS
    ):
        self.bundle = bundle
        self.config: TransformerConfig = bundle.transformer_config
        self.pipeline = {**DEFAULT_PIPELINE, **bundle.pipeline}  # fields a bundle predates
        self.metadata = dict(bundle.metadata)
        self.max_pixels = int(max_pixels)
        self.vq_config = tokenizer_config(bundle.vq_config)
        if self.vq_config.num_vq_embeddings != self.config.codebook_size:
            raise ValueError(
                f"Bundle {bundle.path!r}: the VQ has {self.vq_config.num_vq_embeddings} codes but "
                f"the transformer predicts {self.config.codebook_size}"
            )
        self.text_encoder = (
            text_encoder
            if text_encoder is not None
            else text_encoder_from_spec(bundle.text_encoder, bundle.text_params, bundle.path)
        )
        if self.text_encoder.states_dim != self.config.joint_attention_dim:
            raise ValueError(
                f"The text encoder gives {self.text_encoder.states_dim}-wide states but the "
                f"transformer expects joint_attention_dim={self.config.joint_attention_dim}"
            )
        self.params = jax.device_put(bundle.transformer_params)
        self.vq_params = jax.device_put(bundle.vq_params)
        vq = tokenizer_module(self.vq_config)
        self._encode = jax.jit(functools.partial(_vq_encode, vq))
        self._decode_ids = jax.jit(functools.partial(_vq_decode, vq))
        self._decode_edit = jax.jit(functools.partial(decode_edit, vq))
        # A PatchVQ with a source-guided refiner decodes an edit's changed cells with it.
        self.refines = bool(getattr(self.vq_config, "refiner_width", 0))
        self._model_fns: dict[tuple[float, bool], Callable] = {}
        self._uncond = None
        self._domain_noted = False

    @classmethod
    def from_bundle(
        cls, path: str, dtype: str | None = None, text_encoder=None, **kwargs
    ) -> Editor:
        """Loads the bundle folder `path`; `dtype` (e.g. "bfloat16") is the transformer's compute
        dtype (parameters stay as stored)."""
        overrides = {} if dtype is None else {"dtype": dtype}
        return cls(load_bundle(path, **overrides), text_encoder=text_encoder, **kwargs)

    @property
    def random_init(self) -> bool:
        """True for bundles written by launch.init_checkpoint (random weights)."""
        return bool(self.metadata.get("random_init", False))

    def domain_note(self, shape: tuple[int, int]) -> str | None:
        """A warning for an input of `shape` (height, width) unlike what the model was trained
        on, from the bundle's `metadata.domain` ({"native_size": [h, w], "description": ...},
        set for the embedded default model); None when it fits or the bundle names no domain."""
        domain = self.metadata.get("domain")
        if not domain or tuple(shape) == tuple(domain.get("native_size", shape)):
            return None
        h, w = domain["native_size"]
        return (
            f"This model edits {domain.get('description', 'its own training domain')} "
            f"({h}x{w} px); a {shape[0]}x{shape[1]} input is unlike anything it was trained on, "
            "so expect little. For photos, convert the released EditMGT weights: "
            "python -m launch.convert --from_torch DIR --out CKPT, then pass --checkpoint CKPT."
        )

    @property
    def token_stride(self) -> int:
        """Pixels per side that bucket sides must be multiples of (VQ stride x downsample)."""
        return self.vq_config.stride * self.config.token_stride

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The VQ round trip (encode, then decode) of uint8 [N, H, W, 3] images whose sides are
        multiples of the VQ stride: what a transformer that predicted every token of these images
        exactly would output. uint8 [N, H, W, 3]."""
        ids = self.tokenize(images)
        return imio.to_uint8(np.asarray(self._decode_ids(self.vq_params, jnp.asarray(ids))))

    def reconstruct_edit(self, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """What an edit that predicted every token of `targets` exactly would decode to: the
        target's ids decoded, the source's pixels on cells whose id equals the source's
        (paste-back), the VQ's refiner (if any) on the others. uint8 [N, H, W, 3] in and out."""
        target_ids, source_ids = self.tokenize(targets), self.tokenize(sources)
        decoded = self._decode_edit(
            self.vq_params,
            jnp.asarray(target_ids),
            jnp.asarray(imio.to_float(np.asarray(sources))),
            jnp.asarray(source_ids),
        )
        return imio.to_uint8(np.asarray(decoded))

    def tokenize(self, images: np.ndarray) -> np.ndarray:
        """VQ token ids int32 [N, H / stride, W / stride] of uint8 [N, H, W, 3] images whose sides
        are multiples of the VQ stride (no resizing)."""
        images = np.asarray(images)
        stride = self.vq_config.stride
        if (
            images.ndim != 4
            or images.shape[-1] != 3
            or images.shape[1] % stride
            or (images.shape[2] % stride)
        ):
            raise ValueError(
                f"VQ tokenizing needs uint8 [N, H, W, 3] with H and W multiples of {stride}, "
                f"got shape {images.shape}"
            )
        ids = self._encode(self.vq_params, jnp.asarray(imio.to_float(images)))
        return np.asarray(ids, np.int32)

    def bucket(self, height: int, width: int, resolution: int | None = None) -> tuple[int, int]:
        """(h, w) in pixels the model sees for an image of height x width."""
        res = int(self.pipeline["resolution"] if resolution is None else resolution)
        return imio.bucket_size(height, width, res, self.token_stride)

    # --- preparing requests -------------------------------------------------------------------

    def prepare(
        self,
        image: Any,
        instruction: str,
        *,
        mask: Any = None,
        query: str | None = None,
        seed: int = 0,
        guidance: float | None = None,
        hold_threshold: float | None = None,
        name: str | None = None,
    ) -> EditRequest:
        """Reads and checks one edit; raises ValueError (`ImageInputError` for files) naming it.

        Args:
            image: path, PIL image or uint8 array [H, W, 3].
            instruction: the edit; must not be empty.
            mask: None, or a path / PIL image / array; white (>= 128) = may change. A mask of
                another size is resized (nearest), with a warning.
            query: phrase of the instruction whose attention localizes the edit.
            seed: this edit's PRNG seed.
            guidance, hold_threshold: per-edit CFG scale (>= 0) and lambda in [0, 1]
                (default: the bundle's pipeline values).
        """
        source, default_name = imio.load_image(image, self.max_pixels)
        name = default_name if name is None else name
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"Edit of {name!r}: the instruction is empty ({instruction!r})")
        guidance = float(self.pipeline["guidance"] if guidance is None else guidance)
        if not (np.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"Edit of {name!r}: guidance must be finite and >= 0, got {guidance}")
        lam = float(self.pipeline["hold_threshold"] if hold_threshold is None else hold_threshold)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(
                f"Edit of {name!r}: hold_threshold (lambda) must be in [0, 1], got {lam}"
            )
        if query is not None and not query.strip():
            raise ValueError(f"Edit of {name!r}: the query phrase is empty")
        warnings = []
        note = self.domain_note(source.shape[:2])
        if note is not None and not self._domain_noted:
            self._domain_noted = True  # once per Editor: every photo would say the same
            logger.warning(note)
            warnings.append(note)
        user_mask = None
        if mask is not None:
            user_mask, warning = imio.load_mask(mask, source.shape[:2], self.max_pixels)
            if warning:
                logger.warning(warning)
                warnings.append(warning)
            if not user_mask.any():
                warning = f"Edit of {name!r}: the mask selects no pixel; the image stays as it is"
                logger.warning(warning)
                warnings.append(warning)
        return EditRequest(
            source=source,
            instruction=instruction,
            mask=user_mask,
            query=query,
            seed=int(seed),
            guidance=guidance,
            hold_threshold=lam,
            name=name,
            warnings=warnings,
        )

    # --- running ------------------------------------------------------------------------------

    def model_fn(self, reference_strength: float, query: bool) -> Callable:
        """The cached sampler model_fn (one object per setting, so decode compiles once)."""
        key = (float(reference_strength), bool(query))
        if key not in self._model_fns:
            blocks = tuple(self.pipeline["capture_blocks"])
            self._model_fns[key] = transformer_fn.make_model_fn(
                self.config, blocks, reference_strength, query
            )
        return self._model_fns[key]

    def decode_config(
        self,
        steps: int,
        grid: tuple[int, int],
        sample_temperature: float | None = None,
        **margins: float | None,
    ) -> DecodeConfig:
        """The sampler's static settings for `steps` on a token grid (h, w); `margins`:
        `source_logit_bias` / `region_source_bias` overrides (None: the pipeline's)."""
        return transformer_fn.decode_config_for(
            self.config, self.pipeline, steps, grid, sample_temperature, **margins
        )

    def _uncond_text(self):
        if self._uncond is None:
            encoded = self.text_encoder.encode([""])
            self._uncond = (encoded.states, encoded.pooled)
        return self._uncond

    def edit(
        self,
        images: Sequence[Any],
        instructions: Sequence[str],
        masks: Sequence[Any] | None = None,
        *,
        queries: Sequence[str | None] | None = None,
        seeds: int | Sequence[int] = 0,
        guidance: float | None = None,
        hold_threshold: float | None = None,
        **run_kwargs,
    ) -> list[EditResult]:
        """Prepares and runs edits (see `prepare` and `run`); results in input order."""
        n = len(images)
        if len(instructions) != n:
            raise ValueError(f"{n} images but {len(instructions)} instructions")
        masks = [None] * n if masks is None else list(masks)
        queries = [None] * n if queries is None else list(queries)
        seeds = [int(seeds)] * n if np.ndim(seeds) == 0 else [int(s) for s in seeds]
        for what, values in (("masks", masks), ("queries", queries), ("seeds", seeds)):
            if len(values) != n:
                raise ValueError(f"{n} images but {len(values)} {what}")
        requests = [
            self.prepare(
                image,
                instruction,
                mask=mask,
                query=query,
                seed=seed,
                guidance=guidance,
                hold_threshold=hold_threshold,
            )
            for image, instruction, mask, query, seed in zip(
                images, instructions, masks, queries, seeds, strict=True
            )
        ]
        return self.run(requests, **run_kwargs)

    def run(
        self,
        requests: Sequence[EditRequest],
        *,
        steps: int | None = None,
        reference_strength: float | None = None,
        paste_back: bool | None = None,
        paste_back_tolerance: float | None = None,
        sample_temperature: float | None = None,
        source_logit_bias: float | None = None,
        region_source_bias: float | None = None,
        batch_size: int = 4,
        resolution: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[EditResult]:
        """Runs prepared edits; results in request order.

        Args:
            requests: from `prepare`.
            steps: decoding steps (default: the bundle's).
            reference_strength: source attention strength s (default: the bundle's).
            paste_back: copy the original pixels back wherever the edit is not allowed or did not
                change anything: outside the user mask (exactly, at the original size), on held
                tokens and on tokens equal to the source's (default: the bundle's pipeline
                `paste_back`, else False). Decoding a kept token only approximates its pixels.
            paste_back_tolerance: with paste-back, also copy the original pixels back wherever
                the edited image (at the original size) is within this many uint8 levels (every
                channel) of the original: there the edit left the pixel as it was, up to what the
                VQ can show, so the exact original costs at most that many levels of the edit
                (a changed cell's pixels that the edit did not touch, a kept token the VQ decodes
                only approximately). 0 (the default unless the bundle's pipeline sets it): only
                held / unchanged tokens.
            sample_temperature: masked tokens are sampled from softmax(logits / t); 0 takes the
                most likely code (default: the bundle's pipeline value; 1 as official).
            source_logit_bias, region_source_bias: the sampler's margins on the source token's
                logit, uniform and times one minus the region score (`DecodeConfig`; default:
                the bundle's pipeline values, 0 for a bundle that predates them).
            batch_size: edits per sampler call (per bucket shape).
            resolution: longer side in pixels of the buckets (default: the bundle's).
            progress: called with the number of edits finished after each chunk.
        """
        steps = int(self.pipeline["steps"] if steps is None else steps)
        if paste_back is None:
            paste_back = bool(self.pipeline["paste_back"])
        tolerance = float(
            self.pipeline["paste_back_tolerance"]
            if paste_back_tolerance is None
            else paste_back_tolerance
        )
        if not 0.0 <= tolerance <= 255.0:
            raise ValueError(f"paste_back_tolerance must be in [0, 255], got {tolerance}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        temperature = float(
            self.pipeline["sample_temperature"]
            if sample_temperature is None
            else sample_temperature
        )
        if not (np.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"sample_temperature must be >= 0, got {temperature}")
        margins = dict(source_logit_bias=source_logit_bias, region_source_bias=region_source_bias)
        for name, value in margins.items():
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        strength = float(
            self.pipeline["reference_strength"]
            if reference_strength is None
            else reference_strength
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, request in enumerate(requests):
            key = self.bucket(*request.source.shape[:2], resolution=resolution)
            groups.setdefault(key, []).append(i)
        results: list[EditResult | None] = [None] * len(requests)
        for bucket, indices in groups.items():
            chunk = min(batch_size, len(indices))
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                # Pad a short last chunk with copies: same batch shape, no new compile.
                padded = part + [part[0]] * (chunk - len(part))
                outs = self._run_chunk(
                    [requests[i] for i in padded],
                    bucket,
                    steps,
                    strength,
                    paste_back,
                    tolerance,
                    temperature,
                    margins,
                )
                for i, out in zip(part, outs, strict=False):
                    results[i] = out
                if progress is not None:
                    progress(len(part))
        return results

    def _run_chunk(
        self,
        requests: Sequence[EditRequest],
        bucket: tuple[int, int],
        steps: int,
        strength: float,
        paste_back: bool,
        tolerance: float,
        sample_temperature: float,
        margins: dict[str, float | None],
    ) -> list[EditResult]:
        cfg = self.config
        stride = self.vq_config.stride
        grid = (bucket[0] // stride, bucket[1] // stride)
        pixels = np.stack([imio.to_float(imio.resize(r.source, bucket)) for r in requests])
        source_tokens = np.asarray(self._encode(self.vq_params, jnp.asarray(pixels)))

        edit_masks = np.stack(
            [
                np.ones(grid, bool) if r.mask is None else imio.token_mask(r.mask, grid)
                for r in requests
            ]
        )
        instructions = [r.instruction for r in requests]
        encoded = self.text_encoder.encode(instructions)
        uncond_states, uncond_pooled = self._uncond_text()
        micro = transformer_fn.micro_conds(bucket[1], bucket[0], self.pipeline["aesthetic_score"])
        use_query = any(r.query is not None for r in requests)
        text_weights = None
        if use_query:
            text_weights, missing = transformer_fn.query_text_weights(
                _query_tokenizer(self.text_encoder), instructions, [r.query for r in requests]
            )
            for query in missing:
                logger.warning(
                    "Query %r is not in its instruction's tokens; using all text tokens", query
                )
        holds = [r.hold_threshold for r in requests]
        if not self.pipeline["capture_blocks"]:
            if any(holds):
                raise ValueError(
                    f"hold_threshold {holds} needs attention scores, but the bundle's pipeline "
                    "captures no block (capture_blocks is empty)"
                )
            holds = None
        inputs = make_inputs(
            source_tokens,
            encoded.states,
            encoded.pooled,
            micro,
            mask_token_id=cfg.mask_token_id,
            uncond_text_states=uncond_states,
            uncond_pooled=uncond_pooled,
            guidance=[r.guidance for r in requests],
            hold_threshold=holds,
            edit_mask=edit_masks,
            text_weights=text_weights,
        )
        keys = jnp.stack([jax.random.key(r.seed) for r in requests])
        state = decode(
            self.model_fn(strength, use_query),
            inputs,
            keys,
            self.decode_config(steps, grid, sample_temperature, **margins),
            params=self.params,
        )
        if self.refines:  # changed cells through the refiner, the others the source's pixels
            decoded = self._decode_edit(
                self.vq_params, state.tokens, jnp.asarray(pixels), jnp.asarray(source_tokens)
            )
        else:
            decoded = self._decode_ids(self.vq_params, state.tokens)
        edited = imio.to_uint8(np.asarray(decoded))
        tokens, hold, scores = jax.device_get((state.tokens, state.hold_mask, state.scores))

        results = []
        for b, request in enumerate(requests):
            original = request.source
            image = imio.resize(edited[b], original.shape[:2])
            if paste_back:
                unchanged = hold[b] | (np.asarray(tokens[b]) == source_tokens[b])
                keep = imio.upsample_nearest(unchanged, original.shape[:2])
                if tolerance > 0:
                    difference = np.abs(image.astype(np.int16) - original.astype(np.int16))
                    keep = keep | (difference.max(axis=-1) <= tolerance)
                if request.mask is not None:
                    keep = keep | ~request.mask
                image = imio.paste_back(image, original, keep)
            results.append(
                EditResult(
                    image=image,
                    source=original,
                    heatmap=np.asarray(scores[b], np.float32),
                    hold_mask=np.asarray(hold[b], bool),
                    edit_mask=edit_masks[b],
                    source_tokens=source_tokens[b].astype(np.int32),
                    tokens=np.asarray(tokens[b], np.int32),
                    bucket=bucket,
                    name=request.name,
                    warnings=list(request.warnings),
                )
            )
        return results
