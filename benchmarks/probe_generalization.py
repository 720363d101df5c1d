r"""Where an edit model's token accuracy is lost: examples it trained on, fresh scenes with the
training phrasings, fresh scenes with the held-out phrasings.

    python benchmarks/probe_generalization.py --bundle editmgt_jax/assets/default_model --num 280

The held-out probe (`editmgt_jax.training.probe`) on three sets of the synthetic world, each
`--num` examples (all 7 categories): `trained_on` (the training world seed, `--train_seed`, the
examples the shards were made from), `fresh_train_phrasing` (another world seed, training
phrasings: new scenes) and `fresh_heldout_phrasing` (held-out phrasings and scenes). A model that
memorised its scenes scores far higher on the first than the second; one that cannot follow new
words, on the second than the third; one that is short of capacity, low on all three. Prints one
JSON object: per set, the probe's metrics overall and per category (changed-token accuracy from a
fully masked target and with the rest given, unchanged-token accuracy, attention AUROC).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETS = (
    ("trained_on", "train_seed", "train"),
    ("fresh_train_phrasing", "fresh_seed", "train"),
    ("fresh_heldout_phrasing", "heldout_seed", "heldout"),
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="editmgt_jax/assets/default_model")
    parser.add_argument("--num", type=int, default=280, help="examples per set")
    parser.add_argument("--train_seed", type=int, default=20261201, help="the training world's")
    parser.add_argument("--fresh_seed", type=int, default=5130001)
    parser.add_argument("--heldout_seed", type=int, default=2702701)
    args = parser.parse_args(argv)
    if args.num < 7:
        parser.error(f"--num must be at least 7 (one example per category), got {args.num}")

    from configs import default
    from data_pipelines.synthetic import make_example
    from editmgt_jax.checkpoint.bundle import load_bundle
    from editmgt_jax.models.transformer import Transformer
    from editmgt_jax.training.pipeline import TrainingInputs
    from editmgt_jax.training.probe import HeldoutProbe

    bundle = load_bundle(args.bundle)
    cfg = bundle.transformer_config
    config = default.get_config()
    config.init_from = config.vq_checkpoint = args.bundle  # its VQ and text encoder
    inputs = TrainingInputs.create(config)
    model = Transformer(cfg)
    blocks = tuple(bundle.pipeline["capture_blocks"])
    out: dict = dict(bundle=args.bundle, num=args.num)
    for name, seed_field, split in SETS:
        seed = getattr(args, seed_field)
        examples = [make_example(seed, i, config.image_size, split) for i in range(args.num)]
        probe = HeldoutProbe.from_examples(model, cfg, inputs, examples, blocks)
        out[name] = dict(seed=seed, split=split, **probe(bundle.transformer_params))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
