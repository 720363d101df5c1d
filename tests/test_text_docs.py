"""The docstring examples of the text-encoder modules run."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "editmgt_jax.models.text.encoder",
        "editmgt_jax.models.text.tokenizer",
        "editmgt_jax.models.text.minilm",
        "editmgt_jax.models.text.clip",
        "editmgt_jax.models.text.gemma2",
        "editmgt_jax.checkpoint.text",
    ],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
