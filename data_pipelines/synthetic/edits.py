"""Edits of the 7 categories as scene -> scene changes (or a global style), with their words.

Each `plan_*` draws what to change (the instruction's slots) and returns an `EditPlan`, or None
when the drawn edit is impossible for this scene (the caller then draws again). Plans keep every
shape name unique and every shape visible enough, so the instruction always designates exactly one
visible object.

The target is a function of (scene, slots) alone: `apply_edit` computes it without a random draw,
and the slots are exactly what the instruction says (`phrasings.parse_instruction` reads them
back). An added shape goes to the fixed point of the named place with a fixed radius; a move is a
fixed distance; a new background is named in full (pattern, colour, orientation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.synthetic import world
from data_pipelines.synthetic.phrasings import DIRECTIONS, PLACES
from data_pipelines.synthetic.styles import STYLES

# Motion moves a shape by this fraction of the canvas side (16 px at 64 px: 4 tokenizer cells).
MOVE_FRACTION = 0.25
# An added shape's radius, as a fraction of the canvas side.
ADD_RADIUS_FRACTION = 0.14
# A recoloured shape's new colour differs from its old one at least this much (RGB distance).
MIN_RECOLOR_DISTANCE = world.MIN_CONTRAST
_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclasses.dataclass(frozen=True)
class EditPlan:
    """The change: `target` scene (None for style), the edited shape's index in source/target."""

    category: str
    target: world.Scene | None
    source_index: int | None
    target_index: int | None
    slots: dict[str, str]
    style: str | None = None


def _names(scene: world.Scene) -> set[str]:
    return {shape.name for shape in scene.shapes}


def _pick(rng: np.random.Generator, scene: world.Scene) -> int | None:
    return None if not scene.shapes else int(rng.integers(len(scene.shapes)))


def _with_shape(scene: world.Scene, index: int, shape: world.Shape) -> world.Scene:
    shapes = list(scene.shapes)
    shapes[index] = shape
    return dataclasses.replace(scene, shapes=tuple(shapes))


def place_center(place: str, size: int) -> tuple[float, float]:
    """The fixed point (x, y) in pixels of a named place ("in the top left", ...)."""
    if place not in PLACES:
        raise ValueError(f"unknown place {place!r}; expected one of {tuple(PLACES)}")
    fx, fy = PLACES[place]
    return fx * size, fy * size


def _shape_named(scene: world.Scene, name: str) -> int:
    matches = [i for i, shape in enumerate(scene.shapes) if shape.name == name]
    if len(matches) != 1:
        raise ValueError(f"the scene has {len(matches)} shapes named {name!r}; expected one")
    return matches[0]


def apply_edit(scene: world.Scene, category: str, slots: dict[str, str]) -> world.Scene | None:
    """The target scene of an edit named by `slots` (None for a style: a pixel transform).

    Pure: no random draw, so the same (scene, instruction slots) always gives the same target.
    Raises ValueError when the slots do not fit the scene (an unknown or ambiguous object).
    """
    size = scene.size
    if category == "add":
        color, kind = slots["new_obj"].rsplit(" ", 1)
        cx, cy = place_center(slots["where"], size)
        shape = world.Shape(kind, color, cx, cy, ADD_RADIUS_FRACTION * size)
        return dataclasses.replace(scene, shapes=(*scene.shapes, shape))
    if category == "background change":
        return dataclasses.replace(scene, background=world.background_named(slots["background"]))
    if category == "style":
        return None
    index = _shape_named(scene, slots["obj"])
    old = scene.shapes[index]
    if category == "remove":
        return dataclasses.replace(scene, shapes=scene.shapes[:index] + scene.shapes[index + 1 :])
    if category == "replace":
        return _with_shape(scene, index, dataclasses.replace(old, kind=slots["new_kind"]))
    if category == "color":
        return _with_shape(scene, index, dataclasses.replace(old, color=slots["new_color"]))
    if category == "motion change":
        direction = {phrase: key for key, phrase in DIRECTIONS.items()}[slots["direction"]]
        dx, dy = _STEPS[direction]
        step = MOVE_FRACTION * size
        moved = dataclasses.replace(old, cx=old.cx + dx * step, cy=old.cy + dy * step)
        return _with_shape(scene, index, moved)
    raise ValueError(f"unknown category {category!r}")


def _inside(shape: world.Shape, size: int) -> bool:
    low, high = shape.radius, size - shape.radius
    return low <= shape.cx <= high and low <= shape.cy <= high


def _plan(scene: world.Scene, category: str, slots: dict[str, str], **indices) -> EditPlan | None:
    """The plan of these slots, or None when its target breaks a rule of the world."""
    target = apply_edit(scene, category, slots)
    if not world.visible_enough(target):
        return None
    return EditPlan(category, target, slots=slots, **indices)


def plan_add(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    kind = world.SHAPE_KINDS[rng.integers(len(world.SHAPE_KINDS))]
    color = list(world.OBJECT_COLORS)[rng.integers(len(world.OBJECT_COLORS))]
    place = list(PLACES)[rng.integers(len(PLACES))]
    if f"{color} {kind}" in _names(scene) or not world.contrasts(color, scene.background):
        return None
    slots = {"new_obj": f"{color} {kind}", "where": place}
    return _plan(scene, "add", slots, source_index=None, target_index=len(scene.shapes))


def plan_remove(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    slots = {"obj": scene.shapes[index].name}
    return _plan(scene, "remove", slots, source_index=index, target_index=None)


def plan_replace(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    old = scene.shapes[index]
    kinds = [k for k in world.SHAPE_KINDS if k != old.kind]
    new_kind = kinds[rng.integers(len(kinds))]
    if f"{old.color} {new_kind}" in _names(scene):
        return None
    slots = {"obj": old.name, "color": old.color, "new_kind": new_kind}
    return _plan(scene, "replace", slots, source_index=index, target_index=index)


def plan_color(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    old = scene.shapes[index]
    colors = [
        c
        for c in world.OBJECT_COLORS
        if world.color_distance(c, world.OBJECT_COLORS[old.color]) >= MIN_RECOLOR_DISTANCE
    ]
    new_color = colors[rng.integers(len(colors))]
    if f"{new_color} {old.kind}" in _names(scene) or not world.contrasts(
        new_color, scene.background
    ):
        return None
    slots = {"obj": old.name, "new_color": new_color}
    return _plan(scene, "color", slots, source_index=index, target_index=index)


def plan_background(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    new = world.sample_background(rng)
    if new == scene.background:
        return None
    if not all(world.contrasts(shape.color, new) for shape in scene.shapes):
        return None
    slots = {"background": new.description}
    return _plan(scene, "background change", slots, source_index=None, target_index=None)


def plan_motion(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    slots = {"obj": scene.shapes[index].name, "direction": DIRECTIONS[direction]}
    target = apply_edit(scene, "motion change", slots)
    if not _inside(target.shapes[index], scene.size):
        return None
    return _plan(scene, "motion change", slots, source_index=index, target_index=index)


def plan_style(rng: np.random.Generator, scene: world.Scene) -> EditPlan:
    style = list(STYLES)[rng.integers(len(STYLES))]
    return EditPlan("style", None, None, None, {}, style=style)


PLANNERS = {
    "add": plan_add,
    "remove": plan_remove,
    "replace": plan_replace,
    "color": plan_color,
    "background change": plan_background,
    "motion change": plan_motion,
    "style": plan_style,
}
