"""Edits of the 7 categories as scene -> scene changes (or a global style), with their words.

Each `plan_*` returns an `EditPlan`, or None when the drawn edit is impossible for this scene (the
caller then draws again). Plans keep every shape name unique and every shape visible enough, so the
instruction always designates exactly one visible object.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.synthetic import world
from data_pipelines.synthetic.phrasings import DIRECTIONS, where_phrase
from data_pipelines.synthetic.styles import STYLES

# Motion moves a shape by this fraction of the canvas side.
MOVE_FRACTION = (0.22, 0.35)


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


def plan_add(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    shape = world.sample_shape(rng, scene.size)
    if shape.name in _names(scene) or not world.contrasts(shape.color, scene.background):
        return None
    target = dataclasses.replace(scene, shapes=(*scene.shapes, shape))
    if not world.visible_enough(target):
        return None
    slots = {"new_obj": shape.name, "where": where_phrase(shape.cx, shape.cy, scene.size)}
    return EditPlan("add", target, None, len(scene.shapes), slots)


def plan_remove(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    shapes = scene.shapes[:index] + scene.shapes[index + 1 :]
    target = dataclasses.replace(scene, shapes=shapes)
    return EditPlan("remove", target, index, None, {"obj": scene.shapes[index].name})


def plan_replace(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    old = scene.shapes[index]
    kinds = [k for k in world.SHAPE_KINDS if k != old.kind]
    new = dataclasses.replace(old, kind=kinds[rng.integers(len(kinds))])
    if new.name in _names(scene):
        return None
    target = _with_shape(scene, index, new)
    if not world.visible_enough(target):
        return None
    slots = {"obj": old.name, "color": old.color, "new_kind": new.kind}
    return EditPlan("replace", target, index, index, slots)


def plan_color(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    old = scene.shapes[index]
    colors = [c for c in world.OBJECT_COLORS if c != old.color]
    new = dataclasses.replace(old, color=colors[rng.integers(len(colors))])
    if new.name in _names(scene) or not world.contrasts(new.color, scene.background):
        return None
    slots = {"obj": old.name, "new_color": new.color}
    return EditPlan("color", _with_shape(scene, index, new), index, index, slots)


def plan_background(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    new = world.sample_background(rng, scene.size)
    if new.description == scene.background.description:
        return None
    if not all(world.contrasts(shape.color, new) for shape in scene.shapes):
        return None
    target = dataclasses.replace(scene, background=new)
    return EditPlan("background change", target, None, None, {"background": new.description})


def plan_motion(rng: np.random.Generator, scene: world.Scene) -> EditPlan | None:
    index = _pick(rng, scene)
    if index is None:
        return None
    old = scene.shapes[index]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    step = scene.size * rng.uniform(*MOVE_FRACTION)
    dx, dy = {"left": (-step, 0), "right": (step, 0), "up": (0, -step), "down": (0, step)}[
        direction
    ]
    new = dataclasses.replace(old, cx=old.cx + dx, cy=old.cy + dy)
    low, high = new.radius, scene.size - new.radius
    if not (low <= new.cx <= high and low <= new.cy <= high):
        return None
    target = _with_shape(scene, index, new)
    if not world.visible_enough(target):
        return None
    slots = {"obj": old.name, "direction": DIRECTIONS[direction]}
    return EditPlan("motion change", target, index, index, slots)


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
