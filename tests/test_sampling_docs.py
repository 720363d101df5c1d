"""The docstring examples of the sampling modules run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["schedule", "localization", "decode"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # import_module: the package re-exports a function named `decode` over the module's name.
    module = importlib.import_module(f"editmgt_jax.sampling.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"
