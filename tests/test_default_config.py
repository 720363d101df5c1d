"""configs/default.py: the embedded model's stages build, and the source-cell head enters at stage 9
(its weights new, loaded in part) and stays (stage 10 loads stage 9's bundle whole)."""

import pytest

from configs import default
from editmgt_jax.models.transformer_config import TransformerConfig


@pytest.mark.parametrize("arg", [None, "stage1", "stage7", "stage8", "stage9", "stage10"])
def test_every_stage_builds_a_model_config(arg):
    config = default.get_config(arg)
    model = TransformerConfig.from_dict(config.model)
    assert model.source_head == (512 if arg in ("stage9", "stage10") else 0)
    assert model.source_copy == (arg in ("stage7", "stage8", "stage9", "stage10"))


def test_the_head_stages_warm_start_from_the_stage_before():
    nine, ten = default.get_config("stage9"), default.get_config("stage10")
    assert nine.init_from == "workdirs/default_stage8_bundle" and nine.init_partial
    assert ten.init_from == "workdirs/default_stage9_bundle" and not ten.init_partial
    assert nine.train.steps == ten.train.steps == 1200


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage11"):
        default.get_config("stage11")
