"""Fixed-length tokenization through the `tokenizers` package, offline.

`TextTokenizer` wraps a `tokenizers.Tokenizer` and always returns [batch, max_length] int32 ids and
a 1/0 attention mask (padding with the pad id, truncating long texts), which is what a jitted
encoder wants: one shape, one compile. Builders:

- `TextTokenizer.from_file(path, max_length)`: a `tokenizer.json` (MiniLM, Gemma, CLIP).
- `tokenizer_from_folder(folder, max_length)`: a transformers tokenizer folder (`tokenizer.json`,
  or CLIP's `vocab.json` + `merges.txt`), with special tokens from `special_tokens_map.json`.
- `clip_tokenizer_from_open_clip(max_length=77)`: CLIP's BPE from the vocabulary file that ships
  in the PyPI package open-clip-torch (`bpe_simple_vocab_16e6.txt.gz`), without importing it
  (importing open_clip would import torch).

Example:
    >>> from editmgt_jax.checkpoint import minilm_tokenizer
    >>> batch = minilm_tokenizer(max_length=8)(["make it blue"])
    >>> batch.input_ids.shape, batch.attention_mask[0].tolist()
    ((1, 8), [1, 1, 1, 1, 1, 0, 0, 0])
    >>> clip_tokenizer_from_open_clip()(["a photo of a cat"]).input_ids[0, :8].tolist()
    [49406, 320, 1125, 539, 320, 2368, 49407, 0]
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from editmgt_jax.nodeps_packages import package_dir

# CLIP's tokenizer: special tokens, and the split of text into words before byte-level BPE
# (contractions, runs of letters, single digits, runs of other non-space characters).
CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_END_OF_WORD = "</w>"
# open_clip's vocabulary file holds 48,894 merges after one header line (49,408 ids in all).
OPEN_CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
OPEN_CLIP_NUM_MERGES = 49152 - 256 - 2


class TokenBatch(NamedTuple):
    """input_ids [batch, length] int32; attention_mask [batch, length] int32 (1: token)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(
            f"Expected a list of texts, got the single string {texts!r}; wrap it in [ ]"
        )
    texts = list(texts)
    if not texts:
        raise ValueError("The list of texts is empty; expected at least one instruction")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"Every text must be a str; got {bad[:3]!r}")
    return texts


@dataclasses.dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` that pads (right or left) and truncates to `max_length`.

    Attributes:
      tokenizer: the wrapped tokenizer (its own padding/truncation settings are replaced).
      max_length: length of every returned row.
      pad_id: id written at padded positions.
      padding_side: "right" (BERT, CLIP) or "left".
    """

    tokenizer: tokenizers.Tokenizer
    max_length: int
    pad_id: int = 0
    padding_side: str = "right"

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"max_length={self.max_length}; expected a positive length")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side={self.padding_side!r}; expected 'right' or 'left'")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)

    @classmethod
    def from_file(cls, path: str, max_length: int, **kwargs) -> TextTokenizer:
        """From a `tokenizer.json`; the pad id defaults to the one that file configures (or 0)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Tokenizer file {path!r} does not exist")
        tok = tokenizers.Tokenizer.from_file(path)
        if "pad_id" not in kwargs and tok.padding is not None:
            kwargs["pad_id"] = int(tok.padding["pad_id"])
        return cls(tok, max_length, **kwargs)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Texts -> TokenBatch [len(texts), max_length]. Raises on an empty list."""
        texts = _check_texts(texts)
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.full((len(texts), self.max_length), self.pad_id, np.int32)
        mask = np.zeros((len(texts), self.max_length), np.int32)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            cols = slice(0, n) if self.padding_side == "right" else slice(self.max_length - n, None)
            ids[row, cols] = enc.ids
            mask[row, cols] = 1
        return TokenBatch(ids, mask)


def clip_bpe_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]]
) -> tokenizers.Tokenizer:
    """CLIP's byte-level BPE with BOS/EOS added, from a vocabulary and its merges."""
    tok = tokenizers.Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix=CLIP_END_OF_WORD,
            unk_token=CLIP_EOS,
            fuse_unk=False,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenizers.Regex(CLIP_WORD_PATTERN), behavior="removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    bos, eos = vocab[CLIP_BOS], vocab[CLIP_EOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}",
        pair=f"{CLIP_BOS} $A {CLIP_EOS} $B {CLIP_EOS}",
        special_tokens=[(CLIP_BOS, bos), (CLIP_EOS, eos)],
    )
    return tok


def open_clip_vocab_path() -> str:
    """Path of open-clip-torch's bundled BPE vocabulary, found without importing open_clip
    (raises ModuleNotFoundError, with the install command, when it is missing)."""
    path = os.path.join(package_dir("open_clip"), OPEN_CLIP_VOCAB_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist; expected open_clip's BPE vocabulary")
    return path


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2/CLIP order)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_tokenizer_from_open_clip(
    max_length: int = 77, pad_id: int = 0, vocab_path: str | None = None
) -> TextTokenizer:
    """CLIP's tokenizer (49,408 ids; BOS 49406, EOS 49407) from open_clip's vocabulary file.

    Args:
      max_length: row length (CLIP's context is 77).
      pad_id: id at padded positions (0 as in the EditMGT/Meissonic CLIP tokenizer, whose pad
        token is '!'; EOS pooling picks the EOS either way).
      vocab_path: the `.txt.gz` file; default: the one installed with open-clip-torch.
    """
    path = vocab_path or open_clip_vocab_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : OPEN_CLIP_NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    alphabet = _byte_alphabet()
    words = alphabet + [c + CLIP_END_OF_WORD for c in alphabet] + ["".join(m) for m in merges]
    words += [CLIP_BOS, CLIP_EOS]
    vocab = {w: i for i, w in enumerate(words)}
    return TextTokenizer(clip_bpe_tokenizer(vocab, merges), max_length, pad_id=pad_id)


def _special_token_id(folder: str, tok: tokenizers.Tokenizer, name: str) -> int | None:
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, file)
        if os.path.isfile(path):
            with open(path) as f:
                value = json.load(f).get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and tok.token_to_id(value) is not None:
                return tok.token_to_id(value)
    return None


def tokenizer_from_folder(
    folder: str, max_length: int, padding_side: str | None = None
) -> TextTokenizer:
    """A transformers tokenizer folder -> TextTokenizer.

    Reads `tokenizer.json` when present, else CLIP's `vocab.json` + `merges.txt`. The pad id comes
    from `special_tokens_map.json` / `tokenizer_config.json` (else tokenizer.json's padding, else
    0); the padding side from `tokenizer_config.json` unless given.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Tokenizer folder {folder!r} does not exist")
    json_path = os.path.join(folder, "tokenizer.json")
    vocab_path, merges_path = (os.path.join(folder, n) for n in ("vocab.json", "merges.txt"))
    if os.path.isfile(json_path):
        tok = tokenizers.Tokenizer.from_file(json_path)
    elif os.path.isfile(vocab_path) and os.path.isfile(merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = [ln for ln in f.read().split("\n") if ln and not ln.startswith("#version")]
        tok = clip_bpe_tokenizer(vocab, [tuple(ln.split()) for ln in lines])
    else:
        raise FileNotFoundError(
            f"{folder!r} has neither tokenizer.json nor vocab.json + merges.txt"
        )
    pad_id = _special_token_id(folder, tok, "pad_token")
    if pad_id is None:
        pad_id = int(tok.padding["pad_id"]) if tok.padding is not None else 0
    if padding_side is None:
        padding_side = "right"
        config_path = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                padding_side = json.load(f).get("padding_side", "right")
    return TextTokenizer(tok, max_length, pad_id=pad_id, padding_side=padding_side)
