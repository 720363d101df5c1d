r"""Scores edits of a synthetic-world folder against its ground truth, independently of the project.

    python -m launch.make_synthetic --num 700 --split heldout --format png --seed 7340771 --out W
    python -m launch.edit --jobs W/edit_jobs.jsonl --out E
    python benchmarks/score_synthetic_edits.py --world W --edits E

Deliberately written apart from `editmgt_jax.evaluation` (numpy and PIL only, no project import),
so that the embedded model's headline figures do not rest on the code that made them. Per edit,
from `W/jobs.jsonl` (source, target, mask file names, category) and the edited image named by
`W/edit_jobs.jsonl`:

- success: the mean absolute difference to the target inside the ground-truth mask (mask > 0) is
  at most half the source's: |edited - target|_1 <= 0.5 |source - target|_1 over the masked pixels
  (the edit moved the region at least halfway from the source toward the target);
- PSNR outside: 10 log10(255^2 / MSE(source, edited)) over the pixels outside the mask (a
  whole-image style edit has none; identical pixels count as 100 dB);
- clean: |edited - target|_1 <= 0.25 |source - target|_1 inside the mask (three quarters of the
  way) and PSNR outside >= 30 dB for that edit (an edit with no pixels outside: inside only).

A missing or unreadable edit counts as a failure. Prints one JSON object: per category and overall
success (lenient) and clean rates, mean PSNR outside, counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image

PSNR_IDENTICAL = 100.0
CLEAN_FRACTION = 0.25  # of the source's L1 to the target, inside the mask
CLEAN_PSNR = 30.0  # dB outside the mask


def _load(path: str, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert(mode), np.float64)


def score_one(source, target, edited, mask) -> tuple[bool, bool, float | None]:
    """(success, clean, PSNR outside or None) of one edit; images [H, W, 3] 0-255, mask bool
    [H, W]."""
    before = np.abs(source - target)[mask].sum()
    after = np.abs(edited - target)[mask].sum()
    success = bool(before > 0 and after <= 0.5 * before)
    inside_clean = bool(before > 0 and after <= CLEAN_FRACTION * before)
    outside = ~mask
    if not outside.any():
        return success, inside_clean, None
    mse = float(np.square(source - edited)[outside].mean())
    psnr = PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10 * math.log10(255.0**2 / mse))
    return success, inside_clean and psnr >= CLEAN_PSNR, psnr


def score_folder(world: str, edits: str) -> dict:
    """The report of every example in `world/jobs.jsonl` edited into `edits`."""
    with open(os.path.join(world, "jobs.jsonl")) as f:
        truth = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(world, "edit_jobs.jsonl")) as f:
        outs = [json.loads(line)["out"] for line in f if line.strip()]
    if len(truth) != len(outs):
        raise ValueError(f"{world}: {len(truth)} ground-truth rows but {len(outs)} edit jobs")
    per: dict[str, dict[str, list]] = {}
    missing = []
    for row, out in zip(truth, outs, strict=True):
        source = _load(os.path.join(world, row["source"]), "RGB")
        target = _load(os.path.join(world, row["target"]), "RGB")
        mask = _load(os.path.join(world, row["mask"]), "L") > 0
        bucket = per.setdefault(row["category"], {"success": [], "clean": [], "psnr": []})
        try:
            edited = _load(os.path.join(edits, out), "RGB")
        except (OSError, ValueError):
            edited = None
        if edited is None or edited.shape != source.shape:
            missing.append(out)
            bucket["success"].append(False)
            bucket["clean"].append(False)
            continue
        success, clean, psnr = score_one(source, target, edited, mask)
        bucket["success"].append(success)
        bucket["clean"].append(clean)
        if psnr is not None:
            bucket["psnr"].append(psnr)

    def block(successes, cleans, psnrs):
        return dict(
            success=float(np.mean(successes)) if successes else None,
            clean=float(np.mean(cleans)) if cleans else None,
            psnr_outside=float(np.mean(psnrs)) if psnrs else None,
            count=len(successes),
        )

    categories = {c: block(b["success"], b["clean"], b["psnr"]) for c, b in sorted(per.items())}
    overall = block(
        *([x for b in per.values() for x in b[k]] for k in ("success", "clean", "psnr"))
    )
    return dict(overall=overall, categories=categories, missing=missing)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="make_synthetic --format png folder")
    parser.add_argument("--edits", required=True, help="folder of the edited images")
    args = parser.parse_args(argv)
    print(json.dumps(score_folder(args.world, args.edits)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
