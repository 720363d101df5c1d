"""Writes the example scenes of this folder: the first edit of each category of the synthetic
world's held-out split (held-out phrasings and scenes) with seed 2712027, a seed no model was
trained, tuned or evaluated on; taken in order, not chosen by how the model does on them.

    python examples/make_examples.py          # from the repository root

Files: `<category>.png` (the source scene; "background change" -> background.png, "motion
change" -> motion.png) and `jobs.jsonl` ({"image", "instruction", "out", "category"} per line,
paths relative to this folder), which `python -m launch.edit --jobs examples/jobs.jsonl --out
edited/` runs as it is.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_pipelines.schema import CATEGORIES
from data_pipelines.synthetic.generate import make_example, png_bytes

SEED = 2712027
SPLIT = "heldout"
HERE = os.path.dirname(os.path.abspath(__file__))


def short_name(category: str) -> str:
    return {"background change": "background", "motion change": "motion"}.get(category, category)


def main() -> None:
    rows = []
    for index, category in enumerate(CATEGORIES):  # categories cycle with the index
        example = make_example(SEED, index, size=64, split=SPLIT)
        assert example.category == category
        name = short_name(category)
        with open(os.path.join(HERE, f"{name}.png"), "wb") as f:
            f.write(png_bytes(example.source))
        rows.append(
            dict(
                image=f"{name}.png",
                instruction=example.instruction,
                out=f"{name}_edited.png",
                category=category,
            )
        )
    with open(os.path.join(HERE, "jobs.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for row in rows:
        print(f"{row['image']:16s} {row['instruction']}")


if __name__ == "__main__":
    main()
