"""8 simulated devices (data 2 x fsdp 4) give the same training losses as 1 device.

Slow (two step compiles on 8 simulated devices): `python -m pytest -m slow tests/test_training_sharded.py`.
"""

import pytest

from tests.test_sharding import run_on_8_devices


@pytest.mark.slow
def test_sharded_training_equals_single_device():
    result = run_on_8_devices("tests.multidevice.train_step_sharded")
    for a, b in zip(result["single"], result["sharded"], strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), result
    assert len(set(result["single"])) == 3  # the steps changed the parameters
    assert result["opt_state_split"] > 0  # optimizer moments are sharded like the params
