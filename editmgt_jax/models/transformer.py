"""The EditMGT / Meissonic masked generative transformer, with attention injection.

Example (random weights, the fixture's shape; jitted: one compile instead of every op on its own):
    >>> import jax, jax.numpy as jnp
    >>> from configs import official_tiny
    >>> cfg = TransformerConfig.from_dict(official_tiny.get_config().model)
    >>> model = Transformer(cfg)
    >>> inputs = example_inputs(cfg, batch=1, grid=(8, 8))
    >>> params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), **inputs)["params"]
    >>> logits = jax.jit(model.apply)({"params": params}, **inputs)
    >>> logits.shape
    (1, 8, 8, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_LENGTH,
    COND_EMBED,
    EMBED,
    MLP,
    TEXT_EMBED,
    TIME_EMBED,
    Array,
    to_dtype,
    to_precision,
)
from editmgt_jax.models.blocks import (
    BlockConditioning,
    DoubleStreamBlock,
    SingleStreamBlock,
)
from editmgt_jax.models.token_io import (
    Downsample,
    MlmHead,
    SourceCellHead,
    SourceCopyGate,
    TokenEmbed,
    Upsample,
    add_source_logit,
)
from editmgt_jax.models.transformer_config import (
    MICRO_COND_CHANNELS,
    NORM_EPS,
    NUM_MICRO_CONDS,
    ROPE_THETA,
    TIMESTEP_CHANNELS,
    TIMESTEP_SCALE,
    TransformerConfig,
)
from editmgt_jax.nn.embeddings import TwoLayerMLP, sinusoidal_embedding
from editmgt_jax.nn.linear import dense
from editmgt_jax.nn.normalization import RMSNorm
from editmgt_jax.nn.rope import grid_position_ids, rope_tables

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _validate(cfg: TransformerConfig, tokens, text_states, pooled, micro_conds, timestep, source):
    """Trace-time checks of shapes and dtypes (and of values, when they are concrete)."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, height, width] ints, got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    batch, height, width = tokens.shape
    stride = cfg.token_stride
    if height % stride or width % stride:
        raise ValueError(
            f"token grid {height}x{width} is not divisible by the downsample factor {stride}"
        )
    expected = {
        "text_states": (text_states, (batch, None, cfg.joint_attention_dim)),
        "pooled": (pooled, (batch, cfg.pooled_projection_dim)),
        "micro_conds": (micro_conds, (batch, NUM_MICRO_CONDS)),
    }
    if source is not None:
        expected["source_tokens"] = (source, tokens.shape)
    for name, (array, shape) in expected.items():
        if array.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(array.shape, shape, strict=False)
        ):
            pretty = tuple("T" if s is None else s for s in shape)
            raise ValueError(f"{name} has shape {array.shape}, expected {pretty}")
    if source is not None and not jnp.issubdtype(source.dtype, jnp.integer):
        raise ValueError(f"source_tokens must be integers, got dtype {source.dtype}")
    if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch)):
        raise ValueError(
            f"timestep must be a scalar or [batch={batch}], got shape {timestep.shape}"
        )
    for name, ids, upper in (
        ("tokens", tokens, cfg.vocab_size),
        ("source_tokens", source, cfg.vocab_size),
    ):
        if ids is None or isinstance(ids, jax.core.Tracer):
            continue
        host = np.asarray(ids)
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} values span [{lo}, {hi}], expected ids in [0, {upper - 1}]")


class TimeTextEmbedding(nn.Module):
    """temb = MLP(sinusoid(t)) + MLP(condition): [B] and [B, d] -> [B, d]."""

    features: int
    dtype: object = jnp.float32
    param_dtype: object = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, timestep: Array, condition: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        t_emb = sinusoidal_embedding(timestep, TIMESTEP_CHANNELS)
        t_emb = TwoLayerMLP(self.features, TIME_EMBED, name="timestep_embedder", **kw)(t_emb)
        c_emb = TwoLayerMLP(self.features, EMBED, name="text_embedder", **kw)(condition)
        return t_emb.astype(jnp.float32) + c_emb.astype(jnp.float32)


class Transformer(nn.Module):
    """EditMGT transformer. See `__call__` and DESIGN section 4."""

    config: TransformerConfig

    def _stack(self, block_cls, count: int, first_index: int, capture_blocks, capture_mode, name):
        """Returns fn(streams, cond) -> (streams, {global block index: capture})."""
        cfg = self.config
        if cfg.remat_policy != "none":
            block_cls = nn.remat(
                block_cls, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
            )
        indices = [
            i - first_index for i in capture_blocks if first_index <= i < first_index + count
        ]
        if not cfg.scan_layers:
            blocks = [
                block_cls(cfg, capture_mode if i in indices else "none", name=f"{name}_{i}")
                for i in range(count)
            ]

            def run(streams, cond):
                captures = {}
                for i, block in enumerate(blocks):
                    streams, captured = block(streams, cond)
                    if captured is not None:
                        captures[first_index + i] = captured
                return streams, captures

            return run
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=count,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, capture_mode if indices else "none", name=name)

        def run_scanned(streams, cond):
            streams, stacked = scanned(streams, cond)
            return streams, {first_index + i: stacked[i] for i in indices}

        return run_scanned

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        text_states: Array,
        pooled: Array,
        micro_conds: Array,
        timestep: Array,
        source_tokens: Array | None = None,
        reference_strength: float | Array = 1.0,
        capture_blocks: Sequence[int] = (),
        capture_text_weights: Array | None = None,
        capture_reduce: bool = False,
    ):
        """Predicts codebook logits for every token position.

        Args:
          tokens: [B, H, W] int ids (mask id = vocab_size - 1), channels-last grid.
          text_states: [B, T, joint_attention_dim] text encoder states.
          pooled: [B, pooled_projection_dim] pooled text embedding.
          micro_conds: [B, 5] (width, height, crop_top, crop_left, aesthetic score).
          timestep: [B] or scalar; multiplied by 1000 inside (see `timestep_convention`).
          source_tokens: [B, H, W] ids of the source image (attention injection), or None.
          reference_strength: s; attention between source and the rest is biased by log(s).
          capture_blocks: global block indices (double-stream first) whose text->image attention
            is returned.
          capture_text_weights: [B, T] weights of text positions for the reduced capture.
          capture_reduce: return the mean over captured blocks, heads and (weighted) text tokens,
            [B, h * w] on the transformer grid, instead of a dict of [B, heads, T, h * w].
        Returns:
          logits [B, H, W, codebook_size] float32; with capture_blocks, (logits, captures).
        """
        cfg = self.config
        timestep = jnp.asarray(timestep)
        _validate(cfg, tokens, text_states, pooled, micro_conds, timestep, source_tokens)
        capture_blocks = tuple(sorted(set(int(i) for i in capture_blocks)))
        for i in capture_blocks:
            if not 0 <= i < cfg.num_blocks:
                raise ValueError(f"capture block {i} out of range [0, {cfg.num_blocks})")
        kw = dict(
            dtype=to_dtype(cfg.dtype),
            param_dtype=to_dtype(cfg.param_dtype),
            precision=to_precision(cfg.precision),
        )
        d = cfg.inner_dim
        batch, height, width = tokens.shape

        # --- text and conditioning ---
        if cfg.connector_type == "linear":
            connector = dense(d, (TEXT_EMBED, EMBED), use_bias=True, name="connector", **kw)
            text_states = connector(text_states)
        text = dense(d, (EMBED, MLP), use_bias=True, name="context_embedder", **kw)(text_states)
        text = RMSNorm(NORM_EPS, param_dtype=kw["param_dtype"], name="encoder_proj_layer_norm")(
            text
        )
        micro = sinusoidal_embedding(micro_conds.reshape(-1), MICRO_COND_CHANNELS)
        condition = jnp.concatenate([pooled.astype(jnp.float32), micro.reshape(batch, -1)], axis=-1)
        condition = TwoLayerMLP(d, COND_EMBED, use_bias=False, name="cond_embed", **kw)(condition)
        time_text_embed = TimeTextEmbedding(d, name="time_text_embed", **kw)
        timestep = jnp.broadcast_to(timestep.astype(jnp.float32), (batch,)) * TIMESTEP_SCALE
        temb = time_text_embed(timestep, condition)

        # --- token path in (shared by target and source) ---
        embed = TokenEmbed(cfg.vocab_size, d, NORM_EPS, name="embed", **kw)
        down = Downsample(eps=NORM_EPS, name="down_block", **kw) if cfg.downsample else None
        to_hidden_norm = RMSNorm(
            NORM_EPS, param_dtype=kw["param_dtype"], name="project_to_hidden_norm"
        )
        to_hidden = dense(d, (MLP, EMBED), use_bias=False, name="project_to_hidden", **kw)

        def tokens_in(x):  # embedded ids [B, H, W, d]
            if down is not None:
                x = down(x)
            x = x.reshape(batch, -1, d)
            return to_hidden(to_hidden_norm(x)).astype(jnp.float32)

        grid_h, grid_w = height // cfg.token_stride, width // cfg.token_stride
        image = tokens_in(embed(tokens))
        rope = rope_tables(
            jnp.asarray(grid_position_ids(grid_h, grid_w)), cfg.axes_dims_rope, ROPE_THETA
        )
        source, source_temb, source_embedding = None, None, None
        if source_tokens is not None:
            source_embedding = embed(source_tokens)
            source = tokens_in(source_embedding)
            source_temb = time_text_embed(jnp.zeros_like(timestep), condition)
        cond = BlockConditioning(
            temb=temb,
            source_temb=source_temb,
            rope_image=rope,
            rope_source=rope if source is not None else None,
            log_strength=_log_strength(reference_strength),
            text_weights=capture_text_weights,
        )
        text = nn.with_logical_constraint(
            text.astype(jnp.float32), (ACT_BATCH, ACT_LENGTH, ACT_EMBED)
        )
        image = nn.with_logical_constraint(image, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))

        # --- blocks ---
        mode = "mean" if capture_reduce else "full"
        double = self._stack(
            DoubleStreamBlock, cfg.num_layers, 0, capture_blocks, mode, "transformer_blocks"
        )
        single = self._stack(
            SingleStreamBlock,
            cfg.num_single_layers,
            cfg.num_layers,
            capture_blocks,
            mode,
            "single_transformer_blocks",
        )
        (image, text, source), captures = double((image, text, source), cond)
        text_len = text.shape[1]
        (hidden, _, _), single_captures = single(
            (jnp.concatenate([text, image], axis=1), None, source), cond
        )
        captures.update(single_captures)

        # --- token path out ---
        x = hidden[:, text_len:]
        x = RMSNorm(NORM_EPS, param_dtype=kw["param_dtype"], name="project_from_hidden_norm")(x)
        x = dense(d, (EMBED, MLP), use_bias=False, name="project_from_hidden", **kw)(x)
        x = x.reshape(batch, grid_h, grid_w, d)
        if cfg.upsample:
            x = Upsample(eps=NORM_EPS, name="up_block", **kw)(x)
        if cfg.source_head and source_tokens is not None:
            x = SourceCellHead(cfg.source_head, name="source_head", **kw)(x, source_embedding)
        logits = MlmHead(cfg.codebook_size, NORM_EPS, name="mlm_layer", **kw)(x)
        if cfg.source_copy and source_tokens is not None:
            gate = SourceCopyGate(name="source_copy", **kw)(x, source_embedding)
            logits = add_source_logit(logits, source_tokens, gate)
        if not capture_blocks:
            return logits
        if capture_reduce:
            return logits, jnp.mean(jnp.stack([captures[i] for i in capture_blocks]), axis=0)
        return logits, captures


def _log_strength(reference_strength: float | Array) -> Array | None:
    """log(s) for the source bias; None when s is statically 1 (no bias to add: training)."""
    if isinstance(reference_strength, (int, float)) and reference_strength == 1:
        return None
    return jnp.log(jnp.asarray(reference_strength, jnp.float32))


def example_inputs(
    cfg: TransformerConfig,
    batch: int = 1,
    grid: tuple[int, int] = (16, 16),
    text_len: int = 256,
    with_source: bool = True,
    seed: int = 0,
) -> dict[str, Array]:
    """Random, well-formed inputs for `Transformer.apply` (tests, init, benchmarks)."""
    rng = np.random.default_rng(seed)
    inputs = dict(
        tokens=jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, *grid)), jnp.int32),
        text_states=jnp.asarray(
            rng.standard_normal((batch, text_len, cfg.joint_attention_dim)), jnp.float32
        ),
        pooled=jnp.asarray(rng.standard_normal((batch, cfg.pooled_projection_dim)), jnp.float32),
        micro_conds=jnp.asarray(np.tile([1024.0, 1024.0, 0.0, 0.0, 6.0], (batch, 1)), jnp.float32),
        timestep=jnp.full((batch,), 0.5, jnp.float32),
    )
    if with_source:
        inputs["source_tokens"] = jnp.asarray(
            rng.integers(0, cfg.codebook_size, (batch, *grid)), jnp.int32
        )
    return inputs
