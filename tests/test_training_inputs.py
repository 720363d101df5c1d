"""TrainingInputs' text cache: every instruction encoded once, in power-of-two batches."""

import numpy as np

from editmgt_jax.models.text.encoder import EncodedText
from editmgt_jax.training.pipeline import TrainingInputs


class _RecordingEncoder:
    """Encodes a text as its length and first character code; records the batch sizes."""

    max_length = 4

    def __init__(self):
        self.batches = []

    def encode(self, texts):
        self.batches.append(len(texts))
        codes = np.float32([[len(t), ord(t[0]) if t else 0] for t in texts])
        states = np.repeat(codes[:, None, :], self.max_length, axis=1)
        return EncodedText(states, codes, np.ones((len(texts), self.max_length), np.int32))


def test_text_pads_new_instructions_to_a_power_of_two_and_caches_them():
    encoder = _RecordingEncoder()
    inputs = TrainingInputs(None, None, encoder, image_size=8)
    first = ["make it red", "add a star", "remove the cat"]
    states, pooled = inputs.text(first)
    assert encoder.batches == [4]  # 3 new instructions, padded with ""
    np.testing.assert_array_equal(pooled, [[len(t), ord(t[0])] for t in first])
    assert states.shape == (3, 4, 2) and set(inputs.cache) == set(first)  # no pad is cached
    states, pooled = inputs.text(["add a star"] * 2 + [f"text {i}" for i in range(5)])
    assert encoder.batches == [4, 8]  # only the 5 new ones are encoded
    np.testing.assert_array_equal(pooled[:2], [[10, ord("a")]] * 2)
    np.testing.assert_array_equal(pooled[2:], [[6, ord("t")]] * 5)
    inputs.text(first)
    assert encoder.batches == [4, 8]  # all cached
