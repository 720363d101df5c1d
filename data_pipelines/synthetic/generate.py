"""One synthetic edit example from (seed, index): source, target, exact mask, instruction.

Each example draws from its own generator seeded by (seed, split, index), so any index can be made
alone, in any order, in parallel, and gives the same bytes.

Example:
    >>> ex = make_example(seed=0, index=3, size=32)
    >>> ex.source.shape, ex.mask.dtype, ex.category
    ((32, 32, 3), dtype('uint8'), 'color')
    >>> bool(((ex.source != ex.target).any(-1) <= (ex.mask > 0)).all())
    True
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from data_pipelines.schema import CATEGORIES, EditRecord
from data_pipelines.synthetic import world
from data_pipelines.synthetic.edits import PLANNERS, EditPlan, apply_edit
from data_pipelines.synthetic.phrasings import SPLITS, instruction, parse_instruction
from data_pipelines.synthetic.styles import STYLES

MIN_SIZE = 32
DEFAULT_SIZE = 64
# Enough draws that an impossible edit for one scene just moves on to another scene.
MAX_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
    """Arrays: source/target uint8 [S, S, 3], mask uint8 [S, S] (255 = edited, 0 = identical)."""

    source: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    instruction: str
    category: str
    id: str
    details: dict[str, str]
    scene: world.Scene  # the source scene


def category_of(index: int) -> str:
    """Categories cycle with the index, so any 7 consecutive examples hold all of them."""
    return CATEGORIES[index % len(CATEGORIES)]


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _edit_region(
    plan: EditPlan,
    source_visible: list[np.ndarray],
    target_visible: list[np.ndarray] | None,
    scene: world.Scene,
) -> np.ndarray:
    """The semantic region of the edit (bool [S, S]); the caller adds every differing pixel."""
    size = scene.size
    if plan.category == "style":
        return np.ones((size, size), bool)
    if plan.category == "background change":
        shapes_cover = np.zeros((size, size))
        for cov in source_visible:
            shapes_cover += cov
        return shapes_cover < 1.0  # background shows through
    region = np.zeros((size, size), bool)
    if plan.source_index is not None:
        region |= source_visible[plan.source_index] > 0
    if plan.target_index is not None and target_visible is not None:
        region |= target_visible[plan.target_index] > 0
    return region


def make_example(
    seed: int, index: int, size: int = DEFAULT_SIZE, split: str = "train"
) -> SyntheticExample:
    """Makes example `index` of the world seeded by `seed`, with `split` phrasings and scenes."""
    if size < MIN_SIZE:
        raise ValueError(f"size {size} is below the minimum {MIN_SIZE}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = _rng(seed, split, index)
    category = category_of(index)
    for _ in range(MAX_ATTEMPTS):
        scene = world.sample_scene(rng, size)
        plan = PLANNERS[category](rng, scene)
        if plan is None:
            continue
        source, source_visible = world.render(scene)
        if plan.style is not None:
            target, target_visible = STYLES[plan.style](source), None
        else:
            target, target_visible = world.render(plan.target)
        changed = (source != target).any(axis=-1)
        if not changed.any():
            continue
        region = _edit_region(plan, source_visible, target_visible, scene) | changed
        text = instruction(category, split, rng, style=plan.style, **plan.slots)
        details = dict(plan.slots)
        if plan.style is not None:
            details["style"] = plan.style
        return SyntheticExample(
            source=source,
            target=target,
            mask=np.where(region, 255, 0).astype(np.uint8),
            instruction=text,
            category=category,
            id=f"synthetic-{split}-s{seed}-{index:08d}",
            details=details,
            scene=scene,
        )
    raise RuntimeError(f"no valid {category!r} edit after {MAX_ATTEMPTS} scenes (seed {seed})")


def target_from_instruction(scene: world.Scene, text: str) -> np.ndarray:
    """The target image (uint8 [S, S, 3]) of the instruction `text` applied to `scene`.

    Reads the instruction's words back into slots and applies them without any random draw: the
    world's guarantee that the target is a function of (source, instruction) alone.
    """
    category, slots = parse_instruction(text)
    if category == "style":
        return STYLES[slots["style"]](world.render(scene)[0])
    return world.render(apply_edit(scene, category, slots))[0]


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 [H, W] or [H, W, 3] array (same array, same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def to_record(example: SyntheticExample) -> EditRecord:
    """The schema record of an example: PNG source, target and mask."""
    return EditRecord(
        source=png_bytes(example.source),
        target=png_bytes(example.target),
        instruction=example.instruction,
        category=example.category,
        id=example.id,
        mask=png_bytes(example.mask),
    )
