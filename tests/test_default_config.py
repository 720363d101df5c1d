"""configs/default.py: the embedded model's stages build, the source-cell head enters at stage 9
(its weights new, loaded in part) and stays (stages 10-13 load the stage before whole), and
stages 11-13 reword their instructions."""

import pytest

from configs import default
from editmgt_jax.models.transformer_config import TransformerConfig

HEAD_STAGES = ("stage9", "stage10", "stage11", "stage12", "stage13")


@pytest.mark.parametrize("arg", [None, "stage1", "stage7", "stage8", *HEAD_STAGES, "stage14"])
def test_every_stage_builds_a_model_config(arg):
    config = default.get_config(arg)
    model = TransformerConfig.from_dict(config.model)
    assert model.source_head == (512 if arg in (*HEAD_STAGES, "stage14") else 0)
    assert model.source_copy == (arg in ("stage7", "stage8", *HEAD_STAGES, "stage14"))
    assert config.data.rephrase == ("synthetic" if arg in (*HEAD_STAGES[2:], "stage14") else "")


def test_the_head_stages_warm_start_from_the_stage_before():
    configs = [default.get_config(arg) for arg in HEAD_STAGES]
    assert configs[0].init_from == "workdirs/default_stage8_bundle" and configs[0].init_partial
    for number, config in enumerate(configs[1:], start=10):
        assert config.init_from == f"workdirs/default_stage{number - 1}_bundle"
        assert not config.init_partial
    assert {c.train.steps for c in configs} == {1200}
    # Stages 12 and 13 read the shards in orders of their own, with wordings of their own.
    assert len({c.seed for c in configs[2:]}) == 3 and configs[2].seed == default.get_config().seed


def test_stage_14_is_stage_13_with_more_motion_changes():
    thirteen, fourteen = default.get_config("stage13"), default.get_config("stage14")
    weights = thirteen.data.category_weights.to_dict()
    assert fourteen.data.category_weights.to_dict() == weights | {"motion change": 3.0}
    assert "motion change" not in weights
    fourteen.data.category_weights = thirteen.data.category_weights
    assert fourteen.to_dict() == thirteen.to_dict()  # nothing else differs


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage15"):
        default.get_config("stage15")
