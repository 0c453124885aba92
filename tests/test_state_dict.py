"""describe_mismatch: the one state-dict fit check behind checkpoints, teachers and init."""

from __future__ import annotations

import torch

from s3prl_distill.state_dict import describe_mismatch


def test_match_and_each_kind_of_mismatch():
    model = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert describe_mismatch(model, {"a": torch.ones(2, 3), "b": torch.ones(4)}) is None
    text = describe_mismatch(model, {"a": torch.ones(3, 3), "c": torch.ones(1)})
    assert "missing keys ['b']" in text
    assert "keys not in the model ['c']" in text
    assert "a: checkpoint (3, 3) vs model (2, 3)" in text


def test_partial_state_and_names():
    model = {"a": torch.zeros(2), "b": torch.zeros(2)}
    assert describe_mismatch(model, {"a": torch.ones(2)}, allow_missing=True) is None
    text = describe_mismatch(model, {"a": torch.ones(5)}, allow_missing=True,
                             given_name="teacher", expected_name="student")
    assert text == "shape mismatches ['a: teacher (5,) vs student (2,)']"


def test_long_lists_are_clipped():
    model = {f"k{i}": torch.zeros(1) for i in range(20)}
    text = describe_mismatch(model, {}, limit=3)
    assert text.startswith("missing keys ['k0', 'k1', 'k10'] ...")
