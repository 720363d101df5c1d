"""Writes docs/readme_figure.png: the embedded default model on this folder's seven examples (one
per category, taken in order from the held-out world; `make_examples.py`), with the bundle's
defaults: source | target | edited | attention | kept (white: the token is the source's, held by
region-hold or predicted unchanged), one row per example.

    python examples/make_readme_figure.py          # from the repository root
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_pipelines.schema import CATEGORIES  # noqa: E402
from data_pipelines.synthetic.generate import make_example  # noqa: E402


def main() -> None:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import make_examples

    from editmgt_jax.assets import DEFAULT_MODEL
    from editmgt_jax.editing import images as imio
    from editmgt_jax.editor import Editor
    from editmgt_jax.evaluation.figure import edit_grid

    examples = [
        make_example(make_examples.SEED, i, size=64, split=make_examples.SPLIT)
        for i in range(len(CATEGORIES))
    ]
    editor = Editor.from_bundle(DEFAULT_MODEL)
    results = editor.edit(
        [e.source for e in examples], [e.instruction for e in examples], batch_size=len(examples)
    )
    rows = [
        dict(
            instruction=e.instruction,
            source=e.source,
            target=e.target,
            edited=r.image,
            attention=r.heatmap_image(),
            kept=imio.mask_image((r.tokens == r.source_tokens) | r.hold_mask, e.source.shape[:2]),
        )
        for e, r in zip(examples, results, strict=True)
    ]
    out = os.path.join(ROOT, "docs", "readme_figure.png")
    columns = ("source", "target", "edited", "attention", "kept")
    imio.save_image(out, edit_grid(rows, tile=96, columns=columns))
    print(out)


if __name__ == "__main__":
    main()
