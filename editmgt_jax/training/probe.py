"""A fixed held-out probe of what an edit model has learned, logged while it trains.

Two questions per category, on held-out synthetic examples tokenized once:
- *what*: accuracy (argmax) on the tokens the edit changes, (a) from a fully masked target
  (`changed_acc_full`, the first sampling step) and (b) with every unchanged token given and only
  the changed ones masked (`changed_acc_given_rest`, the last steps of sampling);
- *where*: AUROC of the consolidated text->image attention against the changed cells
  (`attention_auroc`, what region-hold reads).
Plus `unchanged_acc_full`, the copy task. Everything is computed in one jitted forward per mask
setting; metrics come back as one flat dict (`probe/<metric>/<category>` and `probe/<metric>`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.evaluation.metrics import auroc
from editmgt_jax.training.losses import pool_cells
from editmgt_jax.training.masking import training_timestep


def _per_sample_accuracy(logits, targets, where) -> np.ndarray:
    correct = (np.argmax(logits, axis=-1) == targets) & where
    count = where.reshape(len(where), -1).sum(-1)
    hits = correct.reshape(len(where), -1).sum(-1)
    return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def summarize_probe(
    categories: Sequence[str], per_sample: dict[str, np.ndarray]
) -> dict[str, float]:
    """Means per category and overall of per-sample metrics (NaNs left out)."""
    out: dict[str, float] = {}
    by_category = collections.defaultdict(list)
    for i, category in enumerate(categories):
        by_category[category].append(i)
    for name, values in per_sample.items():
        values = np.asarray(values, np.float64)
        for category, rows in sorted(by_category.items()):
            picked = values[rows]
            picked = picked[np.isfinite(picked)]
            if picked.size:
                out[f"probe/{name}/{category}"] = float(picked.mean())
        finite = values[np.isfinite(values)]
        if finite.size:
            out[f"probe/{name}"] = float(finite.mean())
    return out


class HeldoutProbe:
    """Probe batch and its jitted forward.

    Args:
      model: the Transformer module.
      source_tokens / target_tokens: int32 [N, H, W] of held-out examples.
      text_states [N, T, D], pooled [N, P], micro_conds [N, 5]: their instructions.
      categories: N category names.
      mask_id, timestep_convention, token_stride: as the model's config.
      capture_blocks: blocks whose consolidated attention is scored.
    """

    def __init__(
        self,
        model: Any,
        source_tokens: np.ndarray,
        target_tokens: np.ndarray,
        text_states: np.ndarray,
        pooled: np.ndarray,
        micro_conds: np.ndarray,
        categories: Sequence[str],
        mask_id: int,
        timestep_convention: str,
        token_stride: int,
        capture_blocks: Sequence[int],
    ):
        self.source = np.asarray(source_tokens, np.int32)
        self.target = np.asarray(target_tokens, np.int32)
        self.changed = self.target != self.source
        self.categories = list(categories)
        self.token_stride = token_stride
        self.inputs = dict(
            text_states=jnp.asarray(text_states),
            pooled=jnp.asarray(pooled),
            micro_conds=jnp.asarray(micro_conds),
            source_tokens=jnp.asarray(self.source),
        )
        blocks = tuple(capture_blocks)

        def forward(params, tokens, ratio, inputs):
            timestep = training_timestep(ratio, timestep_convention)
            return model.apply(
                {"params": params},
                tokens,
                inputs["text_states"],
                inputs["pooled"],
                inputs["micro_conds"],
                timestep,
                source_tokens=inputs["source_tokens"],
                capture_blocks=blocks,
                capture_reduce=True,
            )

        self._forward: Callable = jax.jit(forward)
        n = len(self.source)
        self.full = np.full_like(self.target, mask_id)
        self.full_ratio = np.ones((n,), np.float32)
        self.given_rest = np.where(self.changed, mask_id, self.target)
        size = self.target[0].size
        self.given_rest_ratio = self.changed.reshape(n, -1).sum(-1).astype(np.float32) / size

    @classmethod
    def from_examples(
        cls, model: Any, model_cfg: Any, inputs: Any, examples: Sequence[Any], capture_blocks
    ) -> HeldoutProbe:
        """The probe of synthetic `examples` (`.source`, `.target`, `.instruction`, `.category`),
        tokenized and text-encoded by `inputs` (a `TrainingInputs`), for `model` of `model_cfg`."""
        batch = inputs.batch(
            dict(
                source=np.stack([e.source for e in examples]),
                target=np.stack([e.target for e in examples]),
                instruction=np.asarray([e.instruction for e in examples]),
            )
        )
        return cls(
            model,
            batch["source_tokens"],
            batch["target_tokens"],
            batch["text_states"],
            batch["pooled"],
            batch["micro_conds"],
            [e.category for e in examples],
            model_cfg.mask_token_id,
            model_cfg.timestep_convention,
            model_cfg.token_stride,
            tuple(capture_blocks),
        )

    def __call__(self, params) -> dict[str, float]:
        logits, scores = self._forward(params, self.full, self.full_ratio, self.inputs)
        logits, scores = np.asarray(logits), np.asarray(scores)
        rest_logits, _ = self._forward(params, self.given_rest, self.given_rest_ratio, self.inputs)
        rest_logits = np.asarray(rest_logits)
        cells = np.asarray(pool_cells(jnp.asarray(self.changed), self.token_stride))
        cells = cells.reshape(len(cells), -1)
        aurocs = [
            auroc(s, c) if 0 < c.sum() < c.size else np.nan
            for s, c in zip(scores, cells, strict=True)
        ]
        per_sample = dict(
            changed_acc_full=_per_sample_accuracy(logits, self.target, self.changed),
            unchanged_acc_full=_per_sample_accuracy(logits, self.target, ~self.changed),
            changed_acc_given_rest=_per_sample_accuracy(rest_logits, self.target, self.changed),
            attention_auroc=np.asarray(aurocs, np.float64),
        )
        return summarize_probe(self.categories, per_sample)
