"""benchmarks/probe_generalization.py: the probe on trained-on, fresh-scene and held-out-phrasing
examples of the shipped bundle (docs/default_model.md, "Where token accuracy is lost")."""

import json

import pytest

from benchmarks import probe_generalization


def test_three_sets_with_every_category(capsys):
    out = probe_generalization.main(["--num", "7", "--heldout_seed", "11"])
    assert json.loads(capsys.readouterr().out) == out
    sets = [name for name, _, _ in probe_generalization.SETS]
    assert [out[n]["seed"] for n in sets] == [20261201, 5130001, 11]
    assert [out[n]["split"] for n in sets] == ["train", "train", "heldout"]
    for name in sets:
        for metric in ("changed_acc_full", "changed_acc_given_rest", "unchanged_acc_full"):
            assert 0.0 <= out[name][f"probe/{metric}"] <= 1.0
        # one example per category (they cycle with the index), each changes some tokens
        assert len([k for k in out[name] if k.startswith("probe/changed_acc_full/")]) == 7
    # the shipped model copies most unchanged tokens of the examples it trained on
    assert out["trained_on"]["probe/unchanged_acc_full"] > 0.8


def test_too_few_examples_is_refused():
    with pytest.raises(SystemExit):
        probe_generalization.main(["--num", "3"])
