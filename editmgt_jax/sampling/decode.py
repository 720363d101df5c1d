"""The edit sampler: MaskGIT-style parallel decoding with region-hold, one jitted `lax.while_loop`.

Per step i of N (DESIGN section 5; official: src/pipeline.py `Pipeline.__call__` and
src/scheduler.py `Scheduler.step`):

1. Run the model on [uncond; cond] (a batch built once; both halves see the source tokens) and
   combine the logits u + g (c - u) for samples with guidance g > 1 (the cond logits otherwise).
2. Sample every masked position from softmax(logits) (no temperature here, as official).
3. Region-hold: masked positions whose region score (consolidated attention of the cond half,
   rescaled, smoothed, resized to the token grid) is below the sample's lambda take the *source*
   token instead of the sample. lambda = 0 turns it off.
4. Unless it is the last step, re-mask exactly `mask_len` of the positions that were masked, the
   least confident: confidence = log p(kept token) + temperature_i * Gumbel; known tokens +inf;
   ranks by argsort (no ties). Known tokens are never re-masked, so each masked token is revealed
   exactly once.

A user mask (True = may change) makes the rest a hard hold: those tokens are never masked, so they
are the source tokens from start to end. Everything is per sample (keys, lambda, guidance, masks),
so an item edited inside a batch equals the item edited alone. Shapes are static: one compile per
(batch, grid, steps, config).

The model is a callable with this contract (batch 2B when `uncond_*` inputs are given, else B):

    model_fn(tokens [2B, H, W] int32, source_tokens [2B, H, W] int32, text_states [2B, T, D],
             pooled [2B, P], micro_conds [2B, 5], timestep [2B] float32)
        -> (logits [2B, H, W, C] float, scores [2B, n] or [2B, T, n] float, or None)

where `scores` is the consolidated text-to-image attention on the transformer's grid (n = H * W,
or (H/2) * (W/2) with downsampling; see `DecodeConfig.score_grid`): already averaged over blocks,
heads and text tokens ([2B, n]), or averaged over blocks and heads only ([2B, T, n]), in which case
the sampler takes the mean over the text tokens, weighted by `EditInputs.text_weights` when given
(the tokens of a query phrase). Pass `params=` to `decode` to
have the model called as `model_fn(params, tokens, ...)`: weights then enter the compiled loop as
arguments rather than as constants baked into the executable (which matters for large models, and
avoids a recompile when the weights change).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from editmgt_jax.sampling import localization, schedule

ModelFn = Callable[..., tuple[jax.Array, jax.Array | None]]

# The official confidence is log(p.clamp(1e-20)).
_LOG_PROB_FLOOR = float(np.log(np.float32(1e-20)))


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Static settings of the sampler (hashable: one compile per distinct config).

    Attributes:
        num_steps: N decoding steps.
        mask_token_id: id of the mask token (vocab_size - 1 in the official model).
        schedule: "cosine" or "linear" mask schedule.
        temperature: (start, end) of the re-masking Gumbel scale, linspace over the steps; a single
            number t means (t, 0.01) as official.
        timestep_convention: "official" (countdown N-1-i) or "mask_ratio" (masked fraction of
            the grid).
        score_grid: (h, w) of the model's score map; None infers it: the token grid when n == H * W,
            the half grid when n == (H/2) * (W/2), else a square.
        smoothing: "adaptive" (official), "gaussian" or "none".
        score_rescale: "minmax" (official) or "max": how region scores are scaled to [0, 1]
            before lambda (`localization.rescale_scores`).
        sample_temperature: masked tokens are sampled from softmax(logits / t); 1 as official, 0
            takes the most likely code (a small model's spread-out distribution otherwise puts
            random codes into an edit).
        source_logit_bias: added to the source token's logit at every masked position before
            sampling (0 as official): a margin the model must beat to change a token, so a code it
            is unsure of keeps the source's (what a clean edit keeps outside its region).
        region_source_bias: a further margin times (1 - region score): large where the
            consolidated attention says the edit is not, none at its peak (a soft region-hold;
            needs scores from the model, else ignored).
        record_steps: keep per-step records ([N, B, H, W]) in the state, for tests and plots.
    """

    num_steps: int
    mask_token_id: int
    schedule: str = "cosine"
    temperature: float | tuple[float, float] = (2.0, 0.0)
    timestep_convention: str = "official"
    score_grid: tuple[int, int] | None = None
    smoothing: str = "adaptive"
    score_rescale: str = "minmax"
    sample_temperature: float = 1.0
    source_logit_bias: float = 0.0
    region_source_bias: float = 0.0
    record_steps: bool = False

    def __post_init__(self):
        if self.score_rescale not in localization.RESCALE_METHODS:
            raise ValueError(
                f"Unknown score_rescale {self.score_rescale!r}; "
                f"expected one of {localization.RESCALE_METHODS}"
            )
        if not (np.isfinite(self.sample_temperature) and self.sample_temperature >= 0):
            raise ValueError(f"sample_temperature must be >= 0, got {self.sample_temperature!r}")
        for name in ("source_logit_bias", "region_source_bias"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {self.num_steps!r}")
        if not isinstance(self.mask_token_id, int) or self.mask_token_id < 0:
            raise ValueError(
                f"mask_token_id must be a non-negative int, got {self.mask_token_id!r}"
            )
        if self.schedule not in schedule.MASK_SCHEDULES:
            raise ValueError(
                f"Unknown mask schedule {self.schedule!r}; "
                f"expected one of {schedule.MASK_SCHEDULES}"
            )
        if self.timestep_convention not in schedule.TIMESTEP_CONVENTIONS:
            raise ValueError(
                f"Unknown timestep convention {self.timestep_convention!r}; "
                f"expected one of {schedule.TIMESTEP_CONVENTIONS}"
            )
        if self.smoothing not in localization.SMOOTHING_METHODS:
            raise ValueError(
                f"Unknown smoothing {self.smoothing!r}; "
                f"expected one of {localization.SMOOTHING_METHODS}"
            )
        if isinstance(self.temperature, list):
            object.__setattr__(self, "temperature", tuple(self.temperature))
        if self.score_grid is not None:
            grid = tuple(int(g) for g in self.score_grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(
                    f"score_grid must be (h, w) of positive ints, got {self.score_grid!r}"
                )
            object.__setattr__(self, "score_grid", grid)


@struct.dataclass
class EditInputs:
    """Per-sample inputs of one batch (build it with `make_inputs`, which checks the values)."""

    source_tokens: jax.Array  # [B, H, W] int32
    text_states: jax.Array  # [B, T, D] conditional text states
    pooled: jax.Array  # [B, P] conditional pooled text
    micro_conds: jax.Array  # [B, 5] float32
    guidance: jax.Array  # [B] float32; CFG where > 1
    edit_mask: jax.Array  # [B, H, W] bool; True = may change
    uncond_text_states: jax.Array | None = None  # [B, T, D]; None runs without CFG
    uncond_pooled: jax.Array | None = None  # [B, P]
    hold_threshold: jax.Array | None = None  # [B] float32 lambda in [0, 1]; None: no region-hold
    text_weights: jax.Array | None = None  # [B, T] float32 query-phrase weights for the scores


@struct.dataclass
class DecodeState:
    """Loop state; the final one is what `decode` returns."""

    step: jax.Array  # [] int32, steps done
    tokens: jax.Array  # [B, H, W] int32; mask id where still masked
    rng: jax.Array  # [B] typed PRNG keys, one stream per sample
    hold_mask: jax.Array  # [B, H, W] bool; the token was revealed by a hold (= source token)
    revealed_at: jax.Array  # [B, H, W] int32; the step that revealed the token, -1 if never masked
    scores: jax.Array  # [B, H, W] float32; region score map of the latest step (0 without scores)
    masked_history: jax.Array | None = None  # [N, B, H, W] bool; masked in the input of step i
    held_history: jax.Array | None = None  # [N, B, H, W] bool; hold replaced the sample at step i
    tokens_history: jax.Array | None = None  # [N, B, H, W] int32; tokens after step i


def _per_sample(value: Any, batch: int, name: str, dtype) -> np.ndarray:
    array = np.asarray(value, dtype)
    if array.ndim == 0:
        array = np.full((batch,), array, dtype)
    if array.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape [{batch}], got {array.shape}")
    return array


def _batched(value: Any, batch: int, ndim: int, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == ndim - 1:
        array = array[None]
    if array.ndim != ndim or array.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} must have {ndim} dims with batch 1 or {batch}, got shape {array.shape}"
        )
    return np.broadcast_to(array, (batch, *array.shape[1:]))


def make_inputs(
    source_tokens: Any,
    text_states: Any,
    pooled: Any,
    micro_conds: Any,
    *,
    mask_token_id: int | None = None,
    uncond_text_states: Any = None,
    uncond_pooled: Any = None,
    guidance: Any = 1.0,
    hold_threshold: Any = None,
    edit_mask: Any = None,
    text_weights: Any = None,
) -> EditInputs:
    """Checks host values and builds `EditInputs` (scalars and batch-1 arrays broadcast to B).

    Args:
        source_tokens: int [B, H, W], the source image's tokens.
        text_states, pooled: [B, T, D] and [B, P] of the instruction.
        micro_conds: [B, 5] or [5] (width, height, crop top, crop left, aesthetic score).
        mask_token_id: if given, source tokens must lie in [0, mask_token_id).
        uncond_text_states, uncond_pooled: the unconditional (empty instruction) states with
            batch B or 1. Dropped when no sample has guidance > 1 (the model then runs on B
            samples, not 2B).
        guidance: scalar or [B] CFG scale (>= 0; CFG where > 1).
        hold_threshold: None, or scalar / [B] lambda in [0, 1] (0 disables region-hold for that
            sample).
        edit_mask: None (everything may change) or bool [B, H, W] / [H, W], True = may change.
        text_weights: None, or [B, T] / [T] weights of the text tokens for localization (e.g.
            `localization.query_weights` of a query phrase); needs [2B, T, n] scores from the model.

    Example:
        >>> source = np.zeros((2, 4, 4), np.int32)
        >>> text, pooled = np.zeros((2, 3, 8)), np.zeros((2, 6))
        >>> inputs = make_inputs(source, text, pooled, np.zeros(5), hold_threshold=[0.0, 0.3])
        >>> inputs.hold_threshold.tolist(), inputs.uncond_text_states is None
        ([0.0, 0.30000001192092896], True)
    """
    source = np.asarray(source_tokens)
    if source.ndim != 3 or not np.issubdtype(source.dtype, np.integer):
        raise ValueError(
            f"source_tokens must be int [B, H, W], got {source.dtype} shape {source.shape}"
        )
    batch, height, width = source.shape
    if mask_token_id is not None and (source.min() < 0 or source.max() >= mask_token_id):
        raise ValueError(
            f"source_tokens must lie in [0, {mask_token_id}) (mask id {mask_token_id} excluded), "
            f"got values in [{source.min()}, {source.max()}]"
        )
    text = _batched(text_states, batch, 3, "text_states")
    pooled_ = _batched(pooled, batch, 2, "pooled")
    micro = _batched(micro_conds, batch, 2, "micro_conds").astype(np.float32)
    if micro.shape[1] != 5:
        raise ValueError(f"micro_conds must have 5 values per sample, got shape {micro.shape}")

    guidance_ = _per_sample(guidance, batch, "guidance", np.float32)
    if not np.all(np.isfinite(guidance_)) or np.any(guidance_ < 0):
        raise ValueError(f"guidance must be finite and >= 0, got {guidance_.tolist()}")
    use_cfg = bool(np.any(guidance_ > 1))
    if use_cfg and (uncond_text_states is None or uncond_pooled is None):
        raise ValueError(
            f"guidance {guidance_.tolist()} > 1 needs uncond_text_states and uncond_pooled"
        )
    uncond_text = uncond_pool = None
    if use_cfg:
        uncond_text = _batched(uncond_text_states, batch, 3, "uncond_text_states")
        uncond_pool = _batched(uncond_pooled, batch, 2, "uncond_pooled")
        if uncond_text.shape != text.shape or uncond_pool.shape != pooled_.shape:
            raise ValueError(
                f"Unconditional states {uncond_text.shape}, {uncond_pool.shape} must match the "
                f"conditional ones {text.shape}, {pooled_.shape}"
            )

    lam = None
    if hold_threshold is not None:
        lam = _per_sample(hold_threshold, batch, "hold_threshold", np.float32)
        bad = np.flatnonzero(~((lam >= 0) & (lam <= 1)))
        if bad.size:
            raise ValueError(
                f"hold_threshold (lambda) must be in [0, 1]; got {lam[bad].tolist()} "
                f"for samples {bad.tolist()}"
            )

    if edit_mask is None:
        mask = np.ones((batch, height, width), bool)
    else:
        mask = np.asarray(edit_mask)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape[1:] != (height, width) or mask.shape[0] not in (1, batch):
            raise ValueError(
                f"edit_mask shape {np.shape(edit_mask)} does not match the token grid "
                f"[{batch}, {height}, {width}]"
            )
        if mask.dtype != bool:
            raise ValueError(f"edit_mask must be bool (True = may change), got {mask.dtype}")
        mask = np.broadcast_to(mask, (batch, height, width))

    weights = None
    if text_weights is not None:
        weights = _batched(text_weights, batch, 2, "text_weights").astype(np.float32)
        if weights.shape[1] != text.shape[1] or np.any(weights < 0):
            raise ValueError(
                f"text_weights must be non-negative with {text.shape[1]} text positions, got shape "
                f"{weights.shape} and minimum {weights.min()}"
            )

    return EditInputs(
        source_tokens=jnp.asarray(source, jnp.int32),
        text_states=jnp.asarray(text),
        pooled=jnp.asarray(pooled_),
        micro_conds=jnp.asarray(micro),
        guidance=jnp.asarray(guidance_),
        edit_mask=jnp.asarray(mask),
        uncond_text_states=None if uncond_text is None else jnp.asarray(uncond_text),
        uncond_pooled=None if uncond_pool is None else jnp.asarray(uncond_pool),
        hold_threshold=None if lam is None else jnp.asarray(lam),
        text_weights=None if weights is None else jnp.asarray(weights),
    )


def _score_grid(n: int, token_grid: tuple[int, int], config: DecodeConfig) -> tuple[int, int]:
    h, w = token_grid
    if config.score_grid is not None:
        if config.score_grid[0] * config.score_grid[1] != n:
            raise ValueError(
                f"model_fn returned {n} scores per sample but score_grid is {config.score_grid}"
            )
        return config.score_grid
    if n == h * w:
        return h, w
    if n == (h // 2) * (w // 2):
        return h // 2, w // 2
    return localization.square_grid(n)


def _sample_keys(keys: jax.Array, batch: int) -> jax.Array:
    """[B] typed keys from one key (split) or one per sample (typed [B] or raw uint32 [B, 2])."""
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.wrap_key_data(keys)
    if keys.shape == ():
        return jax.random.split(keys, batch)
    if keys.shape != (batch,):
        raise ValueError(
            f"keys must be one key or one per sample ({batch}), got shape {keys.shape}"
        )
    return keys


def _rank(values: jax.Array) -> jax.Array:
    """Position of each value in its row's ascending order (ties by index), int32 [B, L]."""
    return jnp.argsort(jnp.argsort(values, axis=-1), axis=-1).astype(jnp.int32)


def _step(
    state: DecodeState,
    *,
    model: Callable[..., tuple[jax.Array, jax.Array | None]],
    model_inputs: tuple[jax.Array, ...],
    inputs: EditInputs,
    total: jax.Array,
    temps: jax.Array,
    config: DecodeConfig,
) -> DecodeState:
    batch, height, width = state.tokens.shape
    use_cfg = inputs.uncond_text_states is not None
    step = state.step
    tokens = state.tokens
    unknown = tokens == config.mask_token_id
    unknown_count = jnp.sum(unknown, axis=(1, 2), dtype=jnp.int32)

    t = schedule.timestep(
        step, config.num_steps, unknown_count / (height * width), config.timestep_convention
    )
    halves = 2 if use_cfg else 1
    logits, scores = model(jnp.tile(tokens, (halves, 1, 1)), *model_inputs, jnp.tile(t, halves))
    logits = logits.astype(jnp.float32)
    if use_cfg:
        uncond, cond = logits[:batch], logits[batch:]
        g = inputs.guidance[:, None, None, None]
        logits = jnp.where(g > 1, uncond + g * (cond - uncond), cond)

    region = state.scores
    if scores is not None:
        if scores.ndim not in (2, 3) or scores.shape[0] != halves * batch:
            raise ValueError(
                f"model_fn scores must be [{halves * batch}, n] or [{halves * batch}, T, n], "
                f"got shape {scores.shape}"
            )
        # Official: the capture of the conditional (second) half.
        scores = scores[batch:] if use_cfg else scores
        if scores.ndim == 3:
            scores = localization.text_mean(scores, inputs.text_weights)
        elif inputs.text_weights is not None:
            raise ValueError(
                "text_weights need per-text-token scores [B, T, n] from model_fn, got [B, n]"
            )
        grid = _score_grid(scores.shape[1], (height, width), config)
        region = localization.region_scores(
            scores, grid, (height, width), config.smoothing, config.score_rescale
        )
        region = region.reshape(batch, height, width)
    if config.source_logit_bias or config.region_source_bias:
        # The margin a code must beat to replace the source's: uniform, plus more where the
        # region score says the edit is not (scores in [0, 1] after rescaling).
        margin = jnp.full((batch, height, width), config.source_logit_bias, jnp.float32)
        if config.region_source_bias and scores is not None:
            margin = margin + config.region_source_bias * (1.0 - jnp.clip(region, 0.0, 1.0))
        codes_range = jnp.arange(logits.shape[-1], dtype=jnp.int32)
        is_source = codes_range == inputs.source_tokens[..., None]
        logits = logits + jnp.where(is_source, margin[..., None], 0.0)

    # One Gumbel draw per sample and step serves both the categorical sample (Gumbel-max over the
    # C codes) and the re-masking noise (the extra channel): one PRNG call compiles much faster.
    keys = jax.vmap(lambda k: jax.random.split(k, 2))(state.rng)
    rng, step_keys = keys[:, 0], keys[:, 1]
    codes = logits.shape[-1]
    noise = jax.vmap(lambda k: jax.random.gumbel(k, (height, width, codes + 1), jnp.float32))(
        step_keys
    )
    if config.sample_temperature == 0:
        sampled = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        scaled = logits if config.sample_temperature == 1 else logits / config.sample_temperature
        sampled = jnp.argmax(scaled + noise[..., :codes], axis=-1).astype(jnp.int32)
    sampled = jnp.where(unknown, sampled, tokens)

    held = jnp.zeros_like(unknown)
    if inputs.hold_threshold is not None:
        if scores is None:
            raise ValueError("hold_threshold is set but model_fn returned no scores")
        lam = inputs.hold_threshold[:, None, None]
        held = unknown & (lam > 0) & (region < lam)
    chosen = jnp.where(held, inputs.source_tokens, sampled)

    # Confidence of what is kept (the source token where held), as official.
    lse = jax.nn.logsumexp(logits, axis=-1)
    log_p = jnp.take_along_axis(logits, chosen[..., None], axis=-1)[..., 0] - lse
    log_p = jnp.maximum(log_p, _LOG_PROB_FLOOR)
    confidence = jnp.where(unknown, log_p + temps[step] * noise[..., codes], jnp.inf)

    n_mask = schedule.mask_len(step, config.num_steps, total, unknown_count, config.schedule)
    ranks = _rank(confidence.reshape(batch, -1)).reshape(batch, height, width)
    remask = ranks < n_mask[:, None, None]
    new_tokens = jnp.where(remask, config.mask_token_id, chosen)
    revealed = unknown & ~remask

    def record(history, value):
        return None if history is None else history.at[step].set(value)

    return DecodeState(
        step=step + 1,
        tokens=new_tokens,
        rng=rng,
        hold_mask=jnp.where(revealed, held, state.hold_mask),
        revealed_at=jnp.where(revealed, step, state.revealed_at),
        scores=region,
        masked_history=record(state.masked_history, unknown),
        held_history=record(state.held_history, held),
        tokens_history=record(state.tokens_history, new_tokens),
    )


@functools.partial(jax.jit, static_argnames=("model_fn", "config", "with_params"))
def _decode_jit(
    model_fn: ModelFn,
    config: DecodeConfig,
    with_params: bool,
    params: Any,
    inputs: EditInputs,
    keys: jax.Array,
) -> DecodeState:
    source = inputs.source_tokens.astype(jnp.int32)
    batch, height, width = source.shape
    edit = inputs.edit_mask.astype(bool)
    use_cfg = inputs.uncond_text_states is not None

    # The [uncond; cond] batch is built once; only the tokens and timestep change per step.
    if use_cfg:
        text = jnp.concatenate([inputs.uncond_text_states, inputs.text_states])
        pooled = jnp.concatenate([inputs.uncond_pooled, inputs.pooled])
        model_inputs = (
            jnp.tile(source, (2, 1, 1)),
            text,
            pooled,
            jnp.tile(inputs.micro_conds, (2, 1)),
        )
    else:
        model_inputs = (source, inputs.text_states, inputs.pooled, inputs.micro_conds)
    model = functools.partial(model_fn, params) if with_params else model_fn

    history = (config.num_steps, batch, height, width)
    init = DecodeState(
        step=jnp.zeros((), jnp.int32),
        tokens=jnp.where(edit, config.mask_token_id, source),
        rng=keys,
        hold_mask=jnp.zeros(source.shape, bool),
        revealed_at=jnp.full(source.shape, -1, jnp.int32),
        scores=jnp.zeros(source.shape, jnp.float32),
        masked_history=jnp.zeros(history, bool) if config.record_steps else None,
        held_history=jnp.zeros(history, bool) if config.record_steps else None,
        tokens_history=jnp.zeros(history, jnp.int32) if config.record_steps else None,
    )
    body = functools.partial(
        _step,
        model=model,
        model_inputs=model_inputs,
        inputs=inputs,
        total=jnp.sum(edit, axis=(1, 2), dtype=jnp.int32),
        temps=schedule.temperatures(config.num_steps, config.temperature),
        config=config,
    )
    return jax.lax.while_loop(lambda s: s.step < config.num_steps, body, init)


def decode(
    model_fn: ModelFn,
    inputs: EditInputs,
    keys: jax.Array,
    config: DecodeConfig,
    *,
    params: Any = None,
) -> DecodeState:
    """Edits a batch of token grids; returns the final `DecodeState` (`.tokens`: the edit).

    Compiles once per (model_fn, config, shapes and structure of the inputs); the values of the
    tokens, text, guidance, lambda, masks, keys and params never cause a recompile, and nothing
    leaves the device inside the loop.

    Args:
        model_fn: the model callable (module docstring); the same object on every call, or it
            recompiles.
        inputs: `EditInputs` from `make_inputs`.
        keys: one PRNG key per sample ([B] typed keys or uint32 [B, 2]) so that each sample's result
            does not depend on the rest of the batch; a single key is split into B (then it does).
        config: `DecodeConfig`.
        params: optional pytree passed as `model_fn(params, ...)`'s first argument.

    Example:
        >>> def toy(tokens, source, text, pooled, micro, t):
        ...     logits = jax.nn.one_hot((source + 1) % 7, 8) * 50.0  # predicts source + 1
        ...     return logits, None
        >>> src = np.arange(16, dtype=np.int32).reshape(1, 4, 4) % 7
        >>> inputs = make_inputs(src, np.zeros((1, 2, 4)), np.zeros((1, 3)), np.zeros(5))
        >>> out = decode(toy, inputs, jax.random.key(0), DecodeConfig(num_steps=4, mask_token_id=7))
        >>> bool(jnp.all(out.tokens == (src + 1) % 7))
        True
    """
    batch = inputs.source_tokens.shape[0]
    if inputs.source_tokens.ndim != 3:
        raise ValueError(f"source_tokens must be [B, H, W], got shape {inputs.source_tokens.shape}")
    if (inputs.uncond_text_states is None) != (inputs.uncond_pooled is None):
        raise ValueError("Give both uncond_text_states and uncond_pooled, or neither")
    return _decode_jit(
        model_fn, config, params is not None, params, inputs, _sample_keys(keys, batch)
    )
