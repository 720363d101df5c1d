"""How models are stored: the public loaders and savers.

    from editmgt_jax.checkpoint import load_vq, minilm_encoder, load_transformer

| name | what |
|---|---|
| `load_vq(folder)` / `save_vq(folder, model, params)` | a diffusers `VQModel` folder <-> `(VQModel, params)` |
| `load_transformer(folder)` / `save_transformer(folder, config, params)` | an official transformer folder <-> `(TransformerConfig, params)` |
| `minilm_encoder()`, `minilm_tokenizer()`, `clip_encoder(folder)`, `clip_gemma2_encoder(folder)` | frozen text encoders from their weights (`text.py`) |
| `load_minilm`, `load_clip_text`, `load_gemma2` (+ `save_bert`, `save_clip_text`, `save_gemma2`) | one text model's `(module, params)` |
| `load_bundle(path)` / `save_bundle(path, bundle)` | our checkpoint bundle (`bundle.py`) |

Models (`editmgt_jax.models`, `editmgt_jax.nn`) import nothing from this package; loaders import
the models. The names are resolved on first use, so that importing one submodule (e.g. the
pure-numpy `convert.table`) does not import safetensors, tokenizers and every model.
"""

import importlib

_EXPORTS = {
    "load_vq": "editmgt_jax.checkpoint.convert.vq",
    "save_vq": "editmgt_jax.checkpoint.convert.vq",
    "load_transformer": "editmgt_jax.checkpoint.convert.from_torch",
    "save_transformer": "editmgt_jax.checkpoint.convert.to_torch",
    "clip_encoder": "editmgt_jax.checkpoint.text",
    "clip_gemma2_encoder": "editmgt_jax.checkpoint.text",
    "minilm_encoder": "editmgt_jax.checkpoint.text",
    "minilm_folder": "editmgt_jax.checkpoint.text",
    "minilm_tokenizer": "editmgt_jax.checkpoint.text",
    "load_clip_text": "editmgt_jax.checkpoint.text",
    "load_gemma2": "editmgt_jax.checkpoint.text",
    "load_minilm": "editmgt_jax.checkpoint.text",
    "save_bert": "editmgt_jax.checkpoint.text",
    "save_clip_text": "editmgt_jax.checkpoint.text",
    "save_gemma2": "editmgt_jax.checkpoint.text",
    "load_bundle": "editmgt_jax.checkpoint.bundle",
    "save_bundle": "editmgt_jax.checkpoint.bundle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
