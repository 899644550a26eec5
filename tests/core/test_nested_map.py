"""Tests for seqlab.core.nested_map."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from seqlab.core.nested_map import NestedMap


def _example() -> NestedMap:
    return NestedMap(
        ids=torch.tensor([[1, 2]]),
        enc=NestedMap(out=torch.ones(1, 2, 3), paddings=torch.zeros(1, 2)),
        text=["a b"],
    )


def test_attribute_access_reads_and_writes_keys() -> None:
    m = NestedMap(a=1)
    assert m.a == 1 and m["a"] == 1
    m.b = 2
    assert m["b"] == 2
    m["c"] = 3
    assert m.c == 3
    del m.a
    assert "a" not in m
    assert m == {"b": 2, "c": 3}
    assert isinstance(m, dict)


def test_missing_attribute_names_key_and_lists_keys() -> None:
    m = NestedMap(b=1, a=2)
    with pytest.raises(AttributeError, match=r"NestedMap has no key 'x'; keys: \['a', 'b'\]"):
        _ = m.x
    assert not hasattr(m, "x")
    assert getattr(m, "x", None) is None
    with pytest.raises(KeyError):
        del m.x


def test_flatten_gives_sorted_dotted_keys() -> None:
    m = _example()
    flat = m.flatten()
    assert [k for k, _ in flat] == ["enc.out", "enc.paddings", "ids", "text"]
    assert flat[0][1] is m.enc.out
    assert flat[3][1] == ["a b"]
    assert NestedMap().flatten() == []


def test_with_leaves_replaces_named_leaves_and_keeps_structure() -> None:
    m = NestedMap(step=0, empty=NestedMap(), inner=NestedMap(a=1, b=2))
    out = m.with_leaves({"inner.b": 20, "step": 5})
    assert out == {"step": 5, "empty": {}, "inner": {"a": 1, "b": 20}}
    assert isinstance(out.empty, NestedMap) and isinstance(out.inner, NestedMap)
    assert m.inner.b == 2  # the input is untouched


def test_transform_maps_leaves_and_keeps_structure() -> None:
    m = NestedMap(x=1, inner=NestedMap(y=2, deeper=NestedMap(z=3)))
    out = m.transform(lambda v: v * 10)
    assert out == {"x": 10, "inner": {"y": 20, "deeper": {"z": 30}}}
    assert isinstance(out, NestedMap)
    assert isinstance(out.inner, NestedMap)
    assert isinstance(out.inner.deeper, NestedMap)
    assert m.inner.deeper.z == 3  # the input is untouched


def test_to_moves_tensors_and_keeps_other_leaves() -> None:
    m = _example()
    moved = m.to(torch.device("cpu"))
    assert isinstance(moved, NestedMap)
    torch.testing.assert_close(moved.enc.out, m.enc.out)
    assert moved.text == ["a b"]
    converted = m.transform(lambda v: v.double() if isinstance(v, torch.Tensor) else v)
    assert converted.enc.out.dtype == torch.float64
    assert converted.ids.dtype == torch.float64
    assert converted.text is m.text


def test_copy_and_pickle_round_trip() -> None:
    m = NestedMap(a=1, inner=NestedMap(b=[1, 2]))
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone == m
        assert isinstance(clone, NestedMap)
        assert isinstance(clone.inner, NestedMap)
        clone.inner.b.append(3)
        assert m.inner.b == [1, 2]
