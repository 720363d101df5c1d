"""The miniature released EditMGT folder, assembled from the parity fixtures.

The four fixtures (official_tiny, official_vq, text/clip_tiny, text/gemma2_tiny) fit together;
`released_folder` lays them out as the released model is (fixtures README), with word-level
tokenizers whose ids fit the tiny text encoders. Used by the conversion tests and the benchmark
tests (a converted miniature checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil

import tokenizers
from tokenizers import models, pre_tokenizers, processors

from tests.fixtures_path import fixtures_dir

# Released-layout file <- fixture file (the fixtures' own names differ).
LAYOUT = {
    "editmgt/config.json": "official_tiny/config.json",
    "editmgt/diffusion_pytorch_model.safetensors": "official_tiny/transformer.safetensors",
    "vqvae/config.json": "official_vq/vq_config.json",
    "vqvae/diffusion_pytorch_model.safetensors": "official_vq/vq.safetensors",
    "text_encoder/config.json": "text/clip_tiny/config.json",
    "text_encoder/model.safetensors": "text/clip_tiny/model.safetensors",
    "llm_encoder/config.json": "text/gemma2_tiny/config.json",
    "llm_encoder/model.safetensors": "text/gemma2_tiny/model.safetensors",
}
WORDS = ["make", "it", "the", "red", "blue", "circle", "green", "square"]


def word_tokenizer(specials: dict[str, int], bos: str, eos: str | None) -> tokenizers.Tokenizer:
    """A word-level tokenizer whose ids fit the tiny models' vocabularies."""
    vocab = dict(specials, **{w: 10 + i for i, w in enumerate(WORDS)})
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = f"{bos} $A" + (f" {eos}" if eos else "")
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t]
    )
    return tok


def write_tokenizer(path, tok: tokenizers.Tokenizer, pad: str) -> None:
    os.makedirs(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(dict(pad_token=pad), f)


def released_folder(root, with_tokenizers: bool = True) -> str:
    """The miniature released folder: editmgt/, vqvae/, text_encoder/, llm_encoder/ (fixture
    files renamed as the release names them), tokenizers, model_index.json and scheduler/."""
    root = str(root)
    for dest, src in LAYOUT.items():
        os.makedirs(os.path.join(root, os.path.dirname(dest)), exist_ok=True)
        shutil.copyfile(fixtures_dir(*src.split("/")), os.path.join(root, dest))
    if with_tokenizers:
        # CLIP tiny: BOS 998, EOS 999 (= the highest id, pooled there); Gemma: pad 0, eos 1, bos 2.
        clip = word_tokenizer(
            {"<pad>": 0, "<unk>": 3, "<bos>": 998, "<eos>": 999}, "<bos>", "<eos>"
        )
        gemma = word_tokenizer({"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}, "<bos>", None)
        write_tokenizer(os.path.join(root, "tokenizer"), clip, "<pad>")
        write_tokenizer(os.path.join(root, "llm_tokenizer"), gemma, "<pad>")
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump({"_class_name": "Pipeline", "vqvae": ["diffusers", "VQModel"]}, f)
    os.makedirs(os.path.join(root, "scheduler"))
    with open(os.path.join(root, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "Scheduler", "mask_token_id": 127}, f)
    return root
