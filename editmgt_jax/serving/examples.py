"""The page's clickable examples, read from a jobs JSONL such as the shipped examples/jobs.jsonl.

One JSON object per line, {"image": ..., "instruction": ..., ...} (other keys, e.g. "out", are
ignored). A relative "image" path is looked up next to the JSONL file, then in the folder above it
(the shipped file names its images relative to the repository root: "examples/<name>.png"). A
missing file means no examples; a bad line is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_EXAMPLES = os.path.join(REPO_ROOT, "examples", "jobs.jsonl")


@dataclasses.dataclass(frozen=True)
class Example:
    image: str  # absolute path
    instruction: str


def _resolve(image: str, folder: str) -> str | None:
    candidates = (
        [image]
        if os.path.isabs(image)
        else [
            os.path.join(folder, image),
            os.path.join(os.path.dirname(folder), image),
        ]
    )
    return next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)


def read_examples(path: str | None) -> list[Example]:
    """The examples of a jobs JSONL; [] when `path` is None or does not exist."""
    if path is None or not os.path.isfile(path):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, instruction = record["image"], record["instruction"]
                if not isinstance(image, str) or not isinstance(instruction, str):
                    raise TypeError("image and instruction must be strings")
            except (ValueError, KeyError, TypeError) as e:
                logger.warning("%s line %d: skipped (%s)", path, number, e)
                continue
            found = _resolve(image, folder)
            if found is None:
                logger.warning("%s line %d: skipped (no image file %r)", path, number, image)
                continue
            examples.append(Example(image=found, instruction=instruction))
    return examples
