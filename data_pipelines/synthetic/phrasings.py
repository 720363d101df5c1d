"""Instruction templates per category: phrasings for training, others held out for evaluation.

Placeholders: {obj} "red circle" (the edited shape), {new_obj} "blue star", {new_color},
{new_kind}, {color} (the shape's colour), {where} "in the top left" (one of `PLACES`),
{direction} "to the left", {background} "a beige checkerboard".

Every template of a category carries every slot its edit needs, so `parse_instruction` reads the
slots back from the words alone (the target then follows from the source and the instruction).
`rephrase` words an instruction afresh for training (`data.rephrase`), with the training
phrasings, the extra ones below and the `WRAPPERS`; it never draws a held-out phrasing.
"""

from __future__ import annotations

import functools
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

# More training phrasings, used only when training rewords a stored instruction (`rephrase`);
# worlds are still drawn from the "train" and "heldout" tuples above, so every seed makes the
# same examples as before. The rule they follow (tests/test_data_synthetic.py checks it): none
# brings in a word of its key's held-out phrasings that the training ones lack (beyond
# `FUNCTION_WORDS`), so the held-out phrasings stay unseen in what they add.
EXTRA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "create a {new_obj} {where}",
        "include a {new_obj} {where}",
        "put one {new_obj} {where}",
        "i want a {new_obj} {where}",
        "{where}, add a {new_obj}",
        "give the image a {new_obj} {where}",
        "stick a {new_obj} {where}",
        "add a {new_obj} {where} to the picture",
    ),
    "remove": (
        "eliminate the {obj}",
        "wipe away the {obj}",
        "take out the {obj}",
        "clear the {obj} from the image",
        "strip out the {obj}",
        "remove the {obj} from the picture",
        "cut the {obj} out",
    ),
    "replace": (
        "switch the {obj} to a {new_kind}",
        "convert the {obj} into a {new_kind}",
        "put a {color} {new_kind} in place of the {obj}",
        "exchange the {obj} for a {color} {new_kind}",
        "reshape the {obj} into a {new_kind}",
        "replace the {obj} by a {color} {new_kind}",
        "change the {obj} to a {new_kind}",
    ),
    "color": (
        "give the {obj} a {new_color} color",
        "fill the {obj} with {new_color}",
        "change the {obj} to {new_color}",
        "dye the {obj} {new_color}",
        "set the color of the {obj} to {new_color}",
        "recolour the {obj} {new_color}",
    ),
    "background change": (
        "change the backdrop to {background}",
        "turn the background into {background}",
        "put {background} behind the shapes",
        "make the backdrop {background}",
        "give the image {background} as its background",
        "redo the background as {background}",
    ),
    "motion change": (
        "nudge the {obj} {direction}",
        "carry the {obj} {direction}",
        "move the {obj} a bit {direction}",
        "take the {obj} and move it {direction}",
        "shift the {obj} over {direction}",
        "bring the {obj} {direction}",
    ),
}
EXTRA_STYLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "grayscale": (
        "make it gray",
        "turn it into shades of gray",
        "make the image monochrome",
        "convert it to black and white",
        "take the color out of the image",
    ),
    "invert": (
        "reverse all the colors",
        "invert the image",
        "make a negative of the image",
        "turn the colors inside out",
        "complement all the colors",
    ),
    "posterize": (
        "reduce the number of colors",
        "turn it into a poster",
        "make it posterized",
        "quantize the colors",
        "limit it to a handful of colors",
    ),
    "sepia": (
        "tint it sepia",
        "make it sepia",
        "make it look like an aged photograph",
        "turn it into an old sepia print",
        "apply an old photo tint",
    ),
    "pixelate": (
        "make it pixelated",
        "turn it into big pixels",
        "show it in coarse pixels",
        "make the pixels huge",
        "pixelate it",
    ),
    "line drawing": (
        "make it a line drawing",
        "draw it with lines only",
        "turn it into a pencil sketch",
        "keep only the edges",
        "trace the outlines",
    ),
}
# Requests wrapped around a phrasing: the edit's words then start and end elsewhere in the text.
WRAPPERS: tuple[str, ...] = (
    "please {}",
    "can you {}",
    "could you {}",
    "now {}",
    "{} please",
    "i would like you to {}",
    "go ahead and {}",
)
FUNCTION_WORDS = frozenset({"a", "an", "the", "it", "to", "and", "of", "in", "on", "at", "with"})

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
    return _an(options[rng.integers(len(options))].format(**slots))


def rephrase(text: str, rng: np.random.Generator, wrap_probability: float = 0.5) -> str:
    """Another training phrasing of the instruction `text`: the same edit, worded afresh.

    Reads the edit back (`parse_instruction`), fills one of the category's training phrasings,
    `TEMPLATES` or `STYLE_TEMPLATES` "train" plus `EXTRA_TEMPLATES` / `EXTRA_STYLE_TEMPLATES`,
    drawn with `rng`, and with probability `wrap_probability` wraps it in one of `WRAPPERS`.
    Never draws a held-out phrasing. Raises ValueError when `text` is no phrasing of this world.
    """
    category, slots = parse_instruction(text)
    if category == "style":
        style = slots["style"]
        options = (*STYLE_TEMPLATES[style]["train"], *EXTRA_STYLE_TEMPLATES[style])
    else:
        options = (*TEMPLATES[category]["train"], *EXTRA_TEMPLATES[category])
        if "obj" in slots and "color" not in slots:  # "{color} {kind}": the shape's own colour
            slots["color"] = slots["obj"].rsplit(" ", 1)[0]
        options = tuple(t for t in options if _slot_names(t) <= set(slots))
    words = options[rng.integers(len(options))].format(**slots)
    if rng.uniform() < wrap_probability:
        words = WRAPPERS[rng.integers(len(WRAPPERS))].format(words)
    return _an(words)


def _slot_names(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


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
        # "a olive checkerboard" reads "an olive checkerboard" in an instruction (`instruction`)
        "background": _alternatives(
            form for b in world.all_backgrounds() for form in {b.description, _an(b.description)}
        ),
    }


def _an(text: str) -> str:
    return _AN.sub(r"\1an \2", text)  # "a orange star" -> "an orange star"


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


@functools.cache
def _readers() -> tuple[tuple[tuple[str, re.Pattern], ...], dict[str, str], re.Pattern]:
    """(category, pattern) per object template, style phrasing -> style, and the wrappers'
    pattern: every phrasing this module makes, compiled once."""
    slots = _slot_patterns()
    patterns = tuple(
        (category, _template_pattern(template, slots))
        for category, splits in TEMPLATES.items()
        for template in (*splits["train"], *splits["heldout"], *EXTRA_TEMPLATES[category])
    )
    styles = {
        text: style
        for style, splits in STYLE_TEMPLATES.items()
        for text in (*splits["train"], *splits["heldout"], *EXTRA_STYLE_TEMPLATES[style])
    }
    wrapped = "|".join(
        "^" + re.escape(w).replace(re.escape("{}"), f"(?P<w{i}>.+)") + "$"
        for i, w in enumerate(WRAPPERS)
    )
    return patterns, styles, re.compile(wrapped)


def parse_instruction(text: str) -> tuple[str, dict[str, str]]:
    """(category, slots) that the instruction `text` was made from: any split's phrasing, an
    extra training phrasing, either in one of `WRAPPERS` or bare.

    Style instructions give ("style", {"style": name}). Raises ValueError when no template fits
    or when two readings disagree.
    """
    patterns, styles, wrapped = _readers()
    candidates = [text]
    unwrapped = wrapped.match(text)
    if unwrapped:
        candidates += [v for v in unwrapped.groupdict().values() if v is not None]
    readings = set()
    for words in candidates:
        for category, pattern in patterns:
            match = pattern.match(words)
            if match:
                slots = match.groupdict()
                if "background" in slots:  # back to the world's own description
                    slots["background"] = re.sub(r"^an ", "a ", slots["background"])
                readings.add((category, tuple(sorted(slots.items()))))
        if words in styles:
            readings.add(("style", (("style", styles[words]),)))
    if len(readings) != 1:
        raise ValueError(
            f"instruction {text!r} matches {len(readings)} readings; expected exactly one"
        )
    category, slots = readings.pop()
    return category, dict(slots)
