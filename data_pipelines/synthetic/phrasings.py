"""Instruction templates per category: phrasings for training, others held out for evaluation.

Placeholders: {obj} "red circle" (the edited shape), {new_obj} "blue star", {new_color},
{new_kind}, {color} (the shape's colour), {where} "in the top left" (one of `PLACES`),
{direction} "to the left", {background} "a beige checkerboard".

Every template of a category carries every slot its edit needs, so `parse_instruction` reads the
slots back from the words alone (the target then follows from the source and the instruction).
"""

from __future__ import annotations

import re

import numpy as np

SPLITS = ("train", "heldout")

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "add": {
        "train": (
            "add a {new_obj} {where}",
            "put a {new_obj} {where}",
            "place a {new_obj} {where}",
            "draw a {new_obj} {where}",
            "add one {new_obj} {where}",
        ),
        "heldout": ("insert a {new_obj} {where}", "there should be a {new_obj} {where}"),
    },
    "remove": {
        "train": (
            "remove the {obj}",
            "delete the {obj}",
            "erase the {obj}",
            "take away the {obj}",
            "get rid of the {obj}",
        ),
        "heldout": ("make the {obj} disappear", "the {obj} should be gone"),
    },
    "replace": {
        "train": (
            "replace the {obj} with a {color} {new_kind}",
            "turn the {obj} into a {new_kind}",
            "change the {obj} into a {new_kind}",
            "swap the {obj} for a {color} {new_kind}",
            "make the {obj} a {new_kind}",
        ),
        "heldout": (
            "transform the {obj} into a {new_kind}",
            "the {obj} should become a {new_kind}",
        ),
    },
    "color": {
        "train": (
            "make the {obj} {new_color}",
            "turn the {obj} {new_color}",
            "change the color of the {obj} to {new_color}",
            "paint the {obj} {new_color}",
            "recolor the {obj} {new_color}",
        ),
        "heldout": ("the {obj} should be {new_color}", "color the {obj} {new_color} instead"),
    },
    "background change": {
        "train": (
            "change the background to {background}",
            "make the background {background}",
            "replace the background with {background}",
            "set the background to {background}",
            "use {background} as the background",
        ),
        "heldout": (
            "the background should be {background}",
            "swap the background for {background}",
        ),
    },
    "motion change": {
        "train": (
            "move the {obj} {direction}",
            "shift the {obj} {direction}",
            "slide the {obj} {direction}",
            "push the {obj} {direction}",
            "drag the {obj} {direction}",
        ),
        "heldout": ("relocate the {obj} {direction}", "the {obj} should move {direction}"),
    },
}

# Style phrasings depend on the style, not on objects.
STYLE_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "grayscale": {
        "train": ("make it black and white", "convert the image to grayscale", "remove all color"),
        "heldout": ("desaturate the picture completely",),
    },
    "invert": {
        "train": ("invert the colors", "make it a color negative", "turn it into a negative"),
        "heldout": ("flip every color to its opposite",),
    },
    "posterize": {
        "train": ("posterize the image", "make it look like a poster", "reduce it to a few colors"),
        "heldout": ("give it a flat poster style",),
    },
    "sepia": {
        "train": ("apply a sepia filter", "make it look like an old photo", "give it a sepia tone"),
        "heldout": ("make it look vintage and brownish",),
    },
    "pixelate": {
        "train": ("pixelate the image", "make it look pixelated", "turn it into pixel art"),
        "heldout": ("give it a blocky low resolution look",),
    },
    "line drawing": {
        "train": ("turn it into a line drawing", "make it a sketch", "draw only the outlines"),
        "heldout": ("render it as an outline sketch",),
    },
}

_AN = re.compile(r"(^|\s)a ([aeiou])")
DIRECTIONS = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
# The 9 named places and their fixed points (x, y) as fractions of the canvas side: the centres
# of a 3 x 3 grid, pulled in to multiples of 1/16 (4 px cells at 64 px).
_NEAR, _MID, _FAR = 3 / 16, 8 / 16, 13 / 16
PLACES: dict[str, tuple[float, float]] = {
    "in the top left": (_NEAR, _NEAR),
    "at the top": (_MID, _NEAR),
    "in the top right": (_FAR, _NEAR),
    "on the left": (_NEAR, _MID),
    "in the center": (_MID, _MID),
    "on the right": (_FAR, _MID),
    "in the bottom left": (_NEAR, _FAR),
    "at the bottom": (_MID, _FAR),
    "in the bottom right": (_FAR, _FAR),
}


def instruction(
    category: str, split: str, rng: np.random.Generator, style: str | None = None, **slots: str
) -> str:
    """Fills a template of `category` drawn from `split` ("train" or "heldout") with `slots`."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if category == "style":
        if style not in STYLE_TEMPLATES:
            raise ValueError(f"style {style!r} is not one of {tuple(STYLE_TEMPLATES)}")
        options = STYLE_TEMPLATES[style][split]
    elif category in TEMPLATES:
        options = TEMPLATES[category][split]
    else:
        raise ValueError(f"no phrasings for category {category!r}")
    text = options[rng.integers(len(options))].format(**slots)
    return _AN.sub(r"\1an \2", text)  # "a orange star" -> "an orange star"


def _alternatives(words) -> str:
    # Longest first, so "light gray" is tried before "gray"-like prefixes.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _slot_patterns() -> dict[str, str]:
    from data_pipelines.synthetic import world

    colors = _alternatives(world.OBJECT_COLORS)
    kinds = _alternatives(world.SHAPE_KINDS)
    return {
        "obj": f"(?:{colors}) (?:{kinds})",
        "new_obj": f"(?:{colors}) (?:{kinds})",
        "color": colors,
        "new_color": colors,
        "new_kind": kinds,
        "where": _alternatives(PLACES),
        "direction": _alternatives(DIRECTIONS.values()),
        "background": _alternatives(b.description for b in world.all_backgrounds()),
    }


def _template_pattern(template: str, slots: dict[str, str]) -> re.Pattern:
    # Each slot matches only its own vocabulary; "a" matches "an" too (see `instruction`).
    regex = ""
    for part in re.split(r"(\{\w+\})", template):
        if part.startswith("{"):
            name = part[1:-1]
            regex += f"(?P<{name}>{slots[name]})"
        else:
            regex += " ".join("an?" if w == "a" else re.escape(w) for w in part.split(" "))
    return re.compile(f"^{regex}$")


def parse_instruction(text: str) -> tuple[str, dict[str, str]]:
    """(category, slots) that the instruction `text` of any split was made from.

    Style instructions give ("style", {"style": name}). Raises ValueError when no template fits
    or when two readings disagree.
    """
    readings = set()
    slots = _slot_patterns()
    for category, splits in TEMPLATES.items():
        for template in (*splits["train"], *splits["heldout"]):
            match = _template_pattern(template, slots).match(text)
            if match:
                readings.add((category, tuple(sorted(match.groupdict().items()))))
    for style, splits in STYLE_TEMPLATES.items():
        if text in (*splits["train"], *splits["heldout"]):
            readings.add(("style", (("style", style),)))
    if len(readings) != 1:
        raise ValueError(
            f"instruction {text!r} matches {len(readings)} readings; expected exactly one"
        )
    category, slots = readings.pop()
    return category, dict(slots)
