"""Concurrent requests -> sampler calls of one fixed batch size.

Gradio's queue hands the `/edit` function up to `max_batch_size` requests at once. Requests run
together only when they share what makes the compiled program: the bucket (token grid), steps,
reference_strength, paste-back, whether a query phrase localizes the edit and whether CFG is on
(guidance > 1 for any sample doubles the model's batch). Each such group is cut into chunks of
`batch_size` and every chunk is padded to exactly `batch_size` with copies of its first request,
so a lone request and a batched one run the same program; every request keeps its own PRNG key
(its seed), so it gets bit-identical results either way.

Example:
    >>> plan(["a", "b", "a", "a", "c"], batch_size=2)
    [[0, 2], [3], [1], [4]]
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Hashable, Sequence

import numpy as np

from editmgt_jax.editor import EditResult
from editmgt_jax.serving.inputs import Edit

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProgramKey:
    """What selects the compiled sampler program of a request."""

    bucket: tuple[int, int]
    steps: int
    reference_strength: float
    paste_back: bool
    query: bool
    cfg: bool


@dataclasses.dataclass
class Ran:
    """One request's outcome: its result or the error of its chunk, and the chunk it ran in."""

    result: EditResult | None
    error: str | None
    seconds: float  # wall time of its sampler call
    requests_in_call: int  # real requests in that call (the rest was padding)
    batch_size: int


def program_key(editor, edit: Edit) -> ProgramKey:
    return ProgramKey(
        bucket=editor.bucket(*edit.request.source.shape[:2]),
        steps=edit.steps,
        reference_strength=edit.reference_strength,
        paste_back=edit.paste_back,
        query=edit.request.query is not None,
        cfg=edit.request.guidance > 1,
    )


def plan(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Chunks of request indices: grouped by key (first-seen order), at most `batch_size` each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [
        indices[start : start + batch_size]
        for indices in groups.values()
        for start in range(0, len(indices), batch_size)
    ]


def run_padded(editor, edits: Sequence[Edit], batch_size: int) -> list[EditResult]:
    """Runs edits that share a `ProgramKey` as one sampler call of exactly `batch_size`."""
    if not 1 <= len(edits) <= batch_size:
        raise ValueError(f"{len(edits)} edits for a call of batch size {batch_size}")
    first = edits[0]
    padded = list(edits) + [first] * (batch_size - len(edits))
    results = editor.run(
        [e.request for e in padded],
        steps=first.steps,
        reference_strength=first.reference_strength,
        paste_back=first.paste_back,
        batch_size=batch_size,
    )
    return results[: len(edits)]


def run_all(editor, edits: Sequence[Edit], batch_size: int) -> list[Ran]:
    """Runs every edit (in padded fixed-size calls); a failing call fails only its own requests."""
    outcomes: list[Ran | None] = [None] * len(edits)
    for chunk in plan([program_key(editor, e) for e in edits], batch_size):
        start = time.perf_counter()
        try:
            results, error = run_padded(editor, [edits[i] for i in chunk], batch_size), None
        except Exception as e:  # e.g. an XLA out-of-memory error; the server keeps serving
            logger.exception("A sampler call of %d requests failed", len(chunk))
            results, error = [None] * len(chunk), f"The edit failed: {e}"
        seconds = time.perf_counter() - start
        for i, result in zip(chunk, results, strict=True):
            outcomes[i] = Ran(result, error, seconds, len(chunk), batch_size)
    return outcomes


def warm_up(editor, batch_size: int) -> float:
    """Compiles the default program (a square image at the bundle's resolution, its default
    settings, no mask or query) at `batch_size`; returns the seconds it took."""
    side = int(editor.pipeline["resolution"])
    pipeline = editor.pipeline
    request = editor.prepare(np.full((side, side, 3), 128, np.uint8), "warm up", seed=0)
    edit = Edit(
        request=request,
        steps=int(pipeline["steps"]),
        reference_strength=float(pipeline["reference_strength"]),
        paste_back=bool(pipeline["paste_back"]),
        mask_box=None,
    )
    start = time.perf_counter()
    run_padded(editor, [edit], batch_size)
    return time.perf_counter() - start
