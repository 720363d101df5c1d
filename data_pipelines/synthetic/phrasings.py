"""Instruction templates per category: phrasings for training, others held out for evaluation.

Placeholders: {obj} "red circle" (the edited shape), {new_obj} "blue star", {new_color},
{new_kind}, {color} (the shape's colour), {where} "in the top left", {direction} "to the left",
{background} "a beige checkerboard".
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
            "add a {new_obj}",
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


def where_phrase(cx: float, cy: float, size: int) -> str:
    """Names the 3x3 cell of the canvas that holds (cx, cy)."""
    col = min(2, int(3 * cx / size))
    row = min(2, int(3 * cy / size))
    return (
        ("in the top left", "at the top", "in the top right"),
        ("on the left", "in the center", "on the right"),
        ("in the bottom left", "at the bottom", "in the bottom right"),
    )[row][col]


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
