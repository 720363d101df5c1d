"""Glue between the transformer and the sampler: the `model_fn` of `decode`, micro-conditions and
query-phrase weights.

`make_model_fn` wraps `Transformer.apply` into decode's contract (see `decode` module docstring):

    model_fn(params, tokens, source_tokens, text_states, pooled, micro_conds, timestep)
        -> (logits [B, H, W, C] float32, scores)

with the text-to-image attention of `capture_blocks` reduced in-graph: `scores` is [B, n] (mean
over blocks, heads and text tokens) or, with `query=True`, [B, T, n] (mean over blocks and heads
only; the sampler then weights the text tokens of the query phrase, `EditInputs.text_weights`),
n = h * w on the transformer's grid. Nothing leaves the device.

Example:
    >>> import jax
    >>> from configs import smoke
    >>> from editmgt_jax.models.transformer import Transformer, example_inputs
    >>> from editmgt_jax.models.transformer_config import TransformerConfig
    >>> cfg = TransformerConfig.from_dict(smoke.get_config().model)
    >>> inputs = example_inputs(cfg, batch=2, grid=(8, 8), text_len=4)
    >>> params = jax.jit(Transformer(cfg).init)(jax.random.key(0, impl="rbg"), **inputs)["params"]
    >>> model_fn = make_model_fn(cfg, capture_blocks=(1,))
    >>> logits, scores = jax.jit(model_fn)(params, inputs["tokens"], inputs["source_tokens"],
    ...     inputs["text_states"], inputs["pooled"], inputs["micro_conds"], inputs["timestep"])
    >>> logits.shape, scores.shape
    ((2, 8, 8, 64), (2, 64))
    >>> micro_conds(48, 32, 6.0).tolist()
    [48.0, 32.0, 0.0, 0.0, 6.0]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from editmgt_jax.models.transformer import Transformer
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.sampling.decode import DecodeConfig


def decode_config_for(
    config: TransformerConfig,
    pipeline: Mapping[str, Any],
    steps: int,
    grid: tuple[int, int],
    sample_temperature: float | None = None,
    source_logit_bias: float | None = None,
    region_source_bias: float | None = None,
) -> DecodeConfig:
    """The sampler's static settings for a bundle's `pipeline` (a dict or ConfigDict; fields a
    bundle predates take `DecodeConfig`'s defaults) on a token grid (h, w), as `Editor`, the
    exported sampler and the AOT sampler program all build it; the keyword settings, when not
    None, override the pipeline's."""
    get = pipeline.get
    if sample_temperature is None:
        sample_temperature = get("sample_temperature", 1.0)
    if source_logit_bias is None:
        source_logit_bias = get("source_logit_bias", 0.0)
    if region_source_bias is None:
        region_source_bias = get("region_source_bias", 0.0)
    stride = config.token_stride
    return DecodeConfig(
        num_steps=int(steps),
        mask_token_id=config.mask_token_id,
        schedule=pipeline["schedule"],
        temperature=tuple(pipeline["temperature"]),
        timestep_convention=config.timestep_convention,
        score_grid=(grid[0] // stride, grid[1] // stride),
        smoothing=pipeline["smoothing"],
        score_rescale=get("score_rescale", "minmax"),
        sample_temperature=float(sample_temperature),
        source_logit_bias=float(source_logit_bias),
        region_source_bias=float(region_source_bias),
    )


if TYPE_CHECKING:  # the sampler's model_fn needs no tokenizer (nor the `tokenizers` package)
    from editmgt_jax.models.text.tokenizer import TextTokenizer


def _model_fn(
    model: Transformer,
    capture_blocks: tuple[int, ...],
    reference_strength: float,
    query: bool,
    params,
    tokens,
    source_tokens,
    text_states,
    pooled,
    micro_conds,
    timestep,
):
    out = model.apply(
        {"params": params},
        tokens,
        text_states,
        pooled,
        micro_conds,
        timestep,
        source_tokens=source_tokens,
        reference_strength=reference_strength,
        capture_blocks=capture_blocks,
        capture_reduce=not query,
    )
    if not capture_blocks:
        return out.astype(jnp.float32), None
    logits, captured = out
    if query:
        # Per text token: mean over blocks and heads, [B, T, n]; decode weights the text tokens.
        per_block = [jnp.mean(captured[i].astype(jnp.float32), axis=1) for i in capture_blocks]
        captured = jnp.mean(jnp.stack(per_block), axis=0)
    return logits.astype(jnp.float32), captured.astype(jnp.float32)


def make_model_fn(
    transformer_config: TransformerConfig,
    capture_blocks: Sequence[int] = (),
    reference_strength: float = 1.0,
    query: bool = False,
):
    """The sampler's `model_fn(params, tokens, source_tokens, text_states, pooled, micro_conds,
    timestep) -> (logits [B, H, W, C] float32, scores)`.

    Args:
        transformer_config: the transformer to run.
        capture_blocks: global block indices (double-stream first) whose text-to-image attention
            makes the region scores; empty: scores are None (no region-hold, no heatmap).
        reference_strength: s of the source attention bias log(s) (static: a new value compiles
            a new loop).
        query: return per-text-token scores [B, T, n] so that the sampler can weight the tokens
            of a query phrase; otherwise [B, n] (cheaper, reduced inside the attention).

    Returns a `functools.partial`; build it once and reuse the same object, since `decode`
    compiles once per model_fn object.
    """
    blocks = tuple(sorted({int(b) for b in capture_blocks}))
    for b in blocks:
        if not 0 <= b < transformer_config.num_blocks:
            raise ValueError(
                f"capture block {b} is outside [0, {transformer_config.num_blocks}) for a "
                f"transformer of {transformer_config.num_layers} + "
                f"{transformer_config.num_single_layers} blocks"
            )
    strength = float(reference_strength)
    if not strength > 0:
        raise ValueError(
            f"reference_strength must be > 0 (bias log(s)), got {reference_strength!r}"
        )
    return functools.partial(
        _model_fn, Transformer(transformer_config), blocks, strength, bool(query)
    )


def micro_conds(width: int, height: int, aesthetic_score: float) -> np.ndarray:
    """The official micro-conditioning vector float32 [5]: (width, height, crop top 0, crop left
    0, aesthetic score), width and height in pixels of the image the model sees."""
    return np.asarray([width, height, 0, 0, aesthetic_score], np.float32)


def find_phrase(ids: Sequence[int], phrase: Sequence[int]) -> list[int]:
    """Positions in `ids` of the first contiguous occurrence of `phrase`; if there is none, the
    positions of every id that occurs in `phrase` (a phrase split differently in context); []
    when nothing matches.

    Example:
        >>> find_phrase([101, 5, 7, 9, 102], [7, 9])
        [2, 3]
        >>> find_phrase([101, 5, 7, 9, 102], [9, 4])
        [3]
    """
    ids, phrase = list(ids), list(phrase)
    n = len(phrase)
    if n:
        for start in range(len(ids) - n + 1):
            if ids[start : start + n] == phrase:
                return list(range(start, start + n))
    wanted = set(phrase)
    return [i for i, t in enumerate(ids) if t in wanted]


def query_positions(tokenizer: TextTokenizer, instruction: str, query: str) -> list[int]:
    """Token positions of `query` inside the tokenized `instruction` (the text states' positions).

    Both are tokenized by `tokenizer` (the one of the text states the transformer sees); the
    query without special tokens. Padding never matches: only positions of real tokens count.
    """
    if not query.strip():
        raise ValueError(f"The query phrase is empty (instruction {instruction!r})")
    batch = tokenizer([instruction])
    real = np.flatnonzero(batch.attention_mask[0])
    ids = [int(batch.input_ids[0, i]) for i in real]
    phrase = tokenizer.tokenizer.encode(query, add_special_tokens=False).ids
    return [int(real[i]) for i in find_phrase(ids, phrase)]


def query_text_weights(
    tokenizer: TextTokenizer, instructions: Sequence[str], queries: Sequence[str | None]
) -> tuple[np.ndarray, list[str]]:
    """float32 [B, T] weights (1 on each instruction's query tokens) and the queries not found.

    A sample without a query, or whose query is not found, gets all-ones weights (the plain mean
    over the text tokens, as without a query).
    """
    if len(instructions) != len(queries):
        raise ValueError(f"{len(instructions)} instructions but {len(queries)} queries")
    weights = np.ones((len(instructions), tokenizer.max_length), np.float32)
    missing = []
    for b, (instruction, query) in enumerate(zip(instructions, queries, strict=True)):
        if query is None:
            continue
        positions = query_positions(tokenizer, instruction, query)
        if not positions:
            missing.append(query)
            continue
        weights[b] = 0.0
        weights[b, positions] = 1.0
    return weights, missing
