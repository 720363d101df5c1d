"""What a training config holds in memory, counted from shapes alone (nothing is allocated).

`training_bytes(config)` adds up, for the whole job (divide by the chips the state is sharded
over for a chip's share): the transformer's parameters, the trainable ones (LoRA adapters or all),
the optimizer state `optim` builds for them (its moments' dtypes included), the EMA copy, and the
frozen text encoder the config names (from its init_from bundle's text_encoder.safetensors, else
the released CLIP + Gemma 2 2B, else MiniLM's 22.7M). `launch.inspect` prints it.

Example:
    >>> from configs import smoke
    >>> report = training_bytes(smoke.get_config())
    >>> report["optimizer_state_bytes"] >= 2 * report["trainable_param_bytes"]  # AdamW: mu, nu
    True
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from editmgt_jax.checkpoint.bundle import TEXT_FILE, is_bundle
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.models.transformer_stats import abstract_params

MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2 (bert, 6 layers, hidden 384)


def _nbytes(tree: Any) -> int:
    return int(
        sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(tree))
    )


def _count(tree: Any) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))


def _bundle_text(path: str) -> tuple[int, int] | None:
    """(params, bytes) of a bundle's text_encoder.safetensors, read from its header."""
    from editmgt_jax.checkpoint.folder import safetensors_header

    file = os.path.join(path, TEXT_FILE)
    if not os.path.isfile(file):
        return None
    tensors = safetensors_header(file).values()
    sizes = [
        (int(np.prod(shape, dtype=np.int64)), jnp.dtype(dtype).itemsize) for dtype, shape in tensors
    ]
    return sum(n for n, _ in sizes), sum(n * itemsize for n, itemsize in sizes)


def released_text_params() -> dict[str, int]:
    """Parameters of the released CLIP text tower and Gemma 2 2B (their configs' defaults)."""
    from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
    from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config

    ids = jnp.zeros((1, 8), jnp.int32)
    clip = jax.eval_shape(lambda: CLIPText(CLIPTextConfig()).init(jax.random.key(0), ids))
    gemma = jax.eval_shape(
        lambda: Gemma2(Gemma2Config()).init(jax.random.key(0), ids, None, return_logits=False)
    )
    return dict(clip=_count(clip), gemma=_count(gemma))


def text_encoder_size(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{"text_encoder_params", "text_encoder_bytes", "text_encoder_source"} of the config."""
    section = config.text_encoder
    init = config.get("init_from", "")
    if section.kind == "clip_gemma2" and is_bundle(init) and not section.get("folder"):
        found = _bundle_text(init)
        if found is not None:
            return dict(
                text_encoder_params=found[0], text_encoder_bytes=found[1], text_encoder_source=init
            )
    if section.kind in ("clip_gemma2", "clip"):
        counts = released_text_params()
        params = counts["clip"] + (counts["gemma"] if section.kind == "clip_gemma2" else 0)
        itemsize = 4  # stored float32 unless converted with --dtype bfloat16
        return dict(
            text_encoder_params=params,
            text_encoder_bytes=params * itemsize,
            text_encoder_source="the released CLIP + Gemma 2 2B (float32)"
            if section.kind == "clip_gemma2"
            else "the released CLIP text tower (float32)",
        )
    return dict(
        text_encoder_params=MINILM_PARAMS,
        text_encoder_bytes=MINILM_PARAMS * 4,
        text_encoder_source="all-MiniLM-L6-v2 (float32)",
    )


def training_bytes(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Bytes of the training state and the frozen text encoder (module docstring)."""
    from editmgt_jax.training.lora import init_lora
    from editmgt_jax.training.optimizer import make_optimizer

    cfg = TransformerConfig.from_dict(config.model)
    params = abstract_params(cfg)
    dtype = jnp.dtype(cfg.param_dtype)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), params)
    trainable = params
    lora = config.get("lora")
    if lora is not None and lora.rank > 0:
        trainable = jax.eval_shape(
            lambda p: init_lora(jax.random.key(0), p, lora.rank, tuple(lora.targets)), params
        )
    tx = make_optimizer(config.optim, max(int(config.train.steps), 1))
    opt_state = jax.eval_shape(tx.init, trainable)
    use_ema = float(config.train.get("ema_decay", 0.999)) > 0
    report = dict(
        transformer_params=_count(params),
        param_bytes=_nbytes(params),
        trainable_params=_count(trainable),
        trainable_param_bytes=_nbytes(trainable),
        optimizer_state_bytes=_nbytes(opt_state),
        ema_bytes=_nbytes(trainable) if use_ema else 0,
    )
    report["state_bytes"] = (
        report["param_bytes"]
        + (report["trainable_param_bytes"] if trainable is not params else 0)
        + report["optimizer_state_bytes"]
        + report["ema_bytes"]
    )
    report.update(text_encoder_size(config))
    return report
