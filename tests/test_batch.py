"""Batch helpers: derive (expand stages) and class-label inheritance."""

import numpy as np

from synth.batch import Batch, inherit_labels


def _batch():
    return Batch(
        keys=["s00000000", "s00000001"],
        images=np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
        records=[{"class": 2, "lineage": [{"op": "generate"}]}, {"class": 0, "lineage": []}],
        seg=np.zeros((2, 4, 4), np.int64),
    )


def test_derive_copies_parents_and_records_the_op():
    parent = _batch()
    child = parent.derive([1, 0, 1], ["a", "b", "c"], [{"op": "view", "sigma": 0.2}] * 3)
    assert child.keys == ["a", "b", "c"]
    assert [r["class"] for r in child.records] == [0, 2, 0]
    assert child.records[1]["lineage"] == [{"op": "generate"}, {"op": "view", "sigma": 0.2, "parent": "s00000000"}]
    np.testing.assert_array_equal(child.images[0], parent.images[1])
    child.images[0] += 1  # children own their pixels and records
    child.records[1]["lineage"].append({"op": "x"})
    assert parent.images[1, 0, 0, 0] == 48 and len(parent.records[0]["lineage"]) == 1


def test_expanded_samples_inherit_the_class_their_stage_forgot():
    parent = _batch()
    children = Batch(
        keys=["s00000000", "v1", "v2", "orphan"],
        images=np.zeros((4, 4, 4, 3), np.uint8),
        records=[
            dict(parent.records[0]),
            {"lineage": [{"op": "view", "parent": "s00000001"}]},
            {"class": 1, "lineage": [{"op": "view", "parent": "s00000000"}]},  # set by the stage: kept
            {"lineage": [{"op": "view", "parent": "elsewhere"}]},
        ],
    )
    inherit_labels(parent, children)
    assert [r.get("class") for r in children.records] == [2, 0, 1, None]
