"""Scenes of the synthetic edit world: shapes on a background, sampled from a seed and rendered.

A scene is plain data (`Scene`: background + shapes bottom to top). `render` draws it anti-aliased
(4x supersampling, box filter) with numpy and PIL only, so the same scene gives the same pixels.
It also returns each shape's visible coverage, which the edits use to build exact masks.

Everything an edit could change is a function of what an instruction can name: shapes are upright
(a circle shows no tilt, so a tilted replacement could not be inferred), and every background
pattern has one fixed period and phase (size / 8: stripes and checks 4 px wide at 64 px, aligned
with the 4 px tokenizer cells), with its orientation named. The second tone of a pattern follows
from its colour.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4
# Saturated colours for objects; muted ones for backgrounds so objects stay visible.
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
    "pink": (240, 120, 190),
    "cyan": (30, 200, 220),
    "brown": (130, 80, 40),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "light gray": (200, 200, 200),
    "dark gray": (70, 70, 70),
    "beige": (225, 210, 180),
    "sky blue": (165, 200, 235),
    "mint": (175, 230, 200),
    "lavender": (210, 195, 235),
    "navy": (30, 40, 90),
    "olive": (120, 120, 60),
}
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "hexagon", "cross")
PATTERNS: tuple[str, ...] = ("plain", "stripes", "checker", "gradient", "dots")
# Patterns whose look depends on an orientation, which the description then names.
ORIENTED_PATTERNS: tuple[str, ...] = ("stripes", "gradient")
ORIENTATIONS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
# One pattern period for the whole world (a fraction of the canvas side, at least 4 px).
PATTERN_PERIOD_FRACTION = 1 / 8
# Smallest colour distance between an object and the background it sits on.
MIN_CONTRAST = 90.0
MIN_RADIUS_FRACTION, MAX_RADIUS_FRACTION = 0.10, 0.19
# Every scene holds at least two objects, so an object edit must pick its object out by name.
MIN_SHAPES, MAX_SHAPES = 2, 4
# A shape must keep this fraction of its area visible, so occlusion never hides what is named.
MIN_VISIBLE_FRACTION = 0.6


@dataclasses.dataclass(frozen=True)
class Shape:
    """One object: `kind` in SHAPE_KINDS, `color` in OBJECT_COLORS, centre/radius in pixels."""

    kind: str
    color: str
    cx: float
    cy: float
    radius: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclasses.dataclass(frozen=True)
class Background:
    """`pattern` in PATTERNS over `color` in BACKGROUND_COLORS; `orientation` in ORIENTATIONS for
    ORIENTED_PATTERNS ("" for the others). Its description names every one of these, so a
    background named in an instruction has exactly one rendering."""

    pattern: str
    color: str
    orientation: str = ""

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown background pattern {self.pattern!r}; expected {PATTERNS}")
        if self.color not in BACKGROUND_COLORS:
            raise ValueError(f"unknown background colour {self.color!r}")
        oriented = self.pattern in ORIENTED_PATTERNS
        if oriented != (self.orientation in ORIENTATIONS):
            raise ValueError(
                f"{self.pattern!r} needs an orientation in {ORIENTATIONS}"
                if oriented
                else f"{self.pattern!r} takes no orientation, got {self.orientation!r}"
            )

    @property
    def description(self) -> str:
        return {
            "plain": f"plain {self.color}",
            "stripes": f"{self.orientation} {self.color} stripes",
            "checker": f"a {self.color} checkerboard",
            "gradient": f"a {self.orientation} {self.color} gradient",
            "dots": f"{self.color} dots",
        }[self.pattern]


@dataclasses.dataclass(frozen=True)
class Scene:
    size: int
    background: Background
    shapes: tuple[Shape, ...]  # bottom to top


def color_distance(a: str, b_rgb: tuple[int, int, int]) -> float:
    return math.dist(OBJECT_COLORS[a], b_rgb)


def contrasts(color: str, background: Background) -> bool:
    """Whether an object colour stands out from the background's base colour."""
    return color_distance(color, BACKGROUND_COLORS[background.color]) >= MIN_CONTRAST


def sample_background(rng: np.random.Generator) -> Background:
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    color = list(BACKGROUND_COLORS)[rng.integers(len(BACKGROUND_COLORS))]
    orientation = ORIENTATIONS[rng.integers(len(ORIENTATIONS))]
    return Background(pattern, color, orientation if pattern in ORIENTED_PATTERNS else "")


def all_backgrounds() -> tuple[Background, ...]:
    """Every background of the world (each has its own description)."""
    return tuple(
        Background(pattern, color, orientation)
        for pattern in PATTERNS
        for color in BACKGROUND_COLORS
        for orientation in (ORIENTATIONS if pattern in ORIENTED_PATTERNS else ("",))
    )


def background_named(description: str) -> Background:
    """The background whose `description` this is ("vertical navy stripes", "plain mint", ...)."""
    for background in all_backgrounds():
        if background.description == description:
            return background
    raise ValueError(f"no background is described as {description!r}")


def pattern_period(size: int) -> int:
    """The world's pattern period in pixels for a canvas of `size` (even, at least 4)."""
    return max(4, 2 * round(size * PATTERN_PERIOD_FRACTION / 2))


def sample_shape(
    rng: np.random.Generator,
    size: int,
    kind: str | None = None,
    color: str | None = None,
    radius: float | None = None,
) -> Shape:
    """A random shape fully inside the canvas; fixed `kind`/`color`/`radius` when given."""
    if radius is None:
        radius = size * rng.uniform(MIN_RADIUS_FRACTION, MAX_RADIUS_FRACTION)
    return Shape(
        kind=kind if kind is not None else SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))],
        color=color if color is not None else list(OBJECT_COLORS)[rng.integers(len(OBJECT_COLORS))],
        cx=float(rng.uniform(radius, size - radius)),
        cy=float(rng.uniform(radius, size - radius)),
        radius=float(radius),
    )


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    # Vertices evenly spaced in angle, starting straight up; radii alternate for stars/crosses.
    n = len(radii)
    out = []
    for i, r in enumerate(radii):
        theta = math.radians(angle) + 2 * math.pi * i / n - math.pi / 2
        out.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
    return out


def shape_coverage(shape: Shape, size: int) -> np.ndarray:
    """Anti-aliased coverage of one shape: float64 [size, size] in [0, 1]."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = shape.cx * s, shape.cy * s, shape.radius * s
    if shape.kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape.kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape.kind == "square":
        draw.polygon(_polygon(cx, cy, [r * 0.95] * 4, 45), fill=255)
    elif shape.kind == "triangle":
        draw.polygon(_polygon(cx, cy, [r] * 3, 0), fill=255)
    elif shape.kind == "star":
        draw.polygon(_polygon(cx, cy, [r, 0.45 * r] * 5, 0), fill=255)
    elif shape.kind == "hexagon":
        draw.polygon(_polygon(cx, cy, [r] * 6, 30), fill=255)
    elif shape.kind == "cross":
        w = 0.32 * r
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w)]
        pts += [(-r, w), (-r, -w), (-w, -w)]
        draw.polygon([(cx + x, cy + y) for x, y in pts], fill=255)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {SHAPE_KINDS}")
    small = np.asarray(canvas, dtype=np.float64).reshape(size, s, size, s).mean(axis=(1, 3))
    return small / 255.0


def render_background(background: Background, size: int) -> np.ndarray:
    """The background alone: float64 [size, size, 3] in [0, 255]."""
    base = np.asarray(BACKGROUND_COLORS[background.color], dtype=np.float64)
    # The second tone: lighter for dark colours, darker for light ones.
    second = base * 0.6 if base.mean() > 128 else base + (255 - base) * 0.45
    period = pattern_period(size)
    half = period // 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Horizontal stripes run left to right (the colour changes down the image); a horizontal
    # gradient changes from left to right; diagonal ones along x + y.
    coord = {"horizontal": yy, "vertical": xx, "diagonal": yy + xx, "": yy}[background.orientation]
    if background.pattern == "plain":
        weight = np.zeros((size, size))
    elif background.pattern == "stripes":
        weight = (np.floor(coord / half) % 2).astype(np.float64)
    elif background.pattern == "checker":
        weight = ((np.floor(yy / half) + np.floor(xx / half)) % 2).astype(np.float64)
    elif background.pattern == "gradient":
        ramp = {"horizontal": xx, "vertical": yy, "diagonal": yy + xx}[background.orientation]
        weight = ramp / max(ramp.max(), 1.0)
    elif background.pattern == "dots":
        # A disc of radius period / 4 centred in every period x period block, anti-aliased by
        # its distance to the edge.
        centre = (period - 1) / 2
        dist = np.hypot(yy % period - centre, xx % period - centre)
        weight = np.clip(period / 4 - dist + 0.5, 0.0, 1.0)
    else:
        raise ValueError(f"unknown background pattern {background.pattern!r}; expected {PATTERNS}")
    return base * (1 - weight[..., None]) + second * weight[..., None]


def _visible(coverages: list[np.ndarray]) -> list[np.ndarray]:
    """Each shape's coverage times the transparency of every shape above it."""
    visible = []
    for i, cov in enumerate(coverages):
        left = cov.copy()
        for above in coverages[i + 1 :]:
            left *= 1 - above
        visible.append(left)
    return visible


def render(scene: Scene) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draws the scene.

    Returns:
      image: uint8 [size, size, 3].
      visible: per shape, float64 [size, size] coverage left visible after the shapes above it.
    """
    size = scene.size
    image = render_background(scene.background, size)
    coverages = [shape_coverage(shape, size) for shape in scene.shapes]
    for shape, cov in zip(scene.shapes, coverages, strict=True):
        color = np.asarray(OBJECT_COLORS[shape.color], dtype=np.float64)
        image = image * (1 - cov[..., None]) + color * cov[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), _visible(coverages)


def visible_enough(scene: Scene) -> bool:
    """Whether every shape keeps MIN_VISIBLE_FRACTION of its area visible."""
    coverages = [shape_coverage(shape, scene.size) for shape in scene.shapes]
    for cov, left in zip(coverages, _visible(coverages), strict=True):
        area = cov.sum()
        if area <= 0 or left.sum() / area < MIN_VISIBLE_FRACTION:
            return False
    return True


def sample_scene(
    rng: np.random.Generator, size: int, min_shapes: int = MIN_SHAPES, max_shapes: int = MAX_SHAPES
) -> Scene:
    """A background and 2-4 shapes; (colour, kind) pairs are unique so a name picks one shape."""
    background = sample_background(rng)
    while True:
        count = int(rng.integers(min_shapes, max_shapes + 1))
        shapes: list[Shape] = []
        names: set[str] = set()
        while len(shapes) < count:
            shape = sample_shape(rng, size)
            if shape.name in names or not contrasts(shape.color, background):
                continue
            shapes.append(shape)
            names.add(shape.name)
        scene = Scene(size=size, background=background, shapes=tuple(shapes))
        if visible_enough(scene):
            return scene
