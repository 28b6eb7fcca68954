"""agents/codec.py: checkpoint state as plain tensors, decoded without running code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.codec import CodecError, decode, encode


def test_round_trip_keeps_types_dtypes_shapes_and_keys():
    value = {
        "scalars": (np.float32(1.5), np.int64(-3), np.bool_(True)),
        7: [np.arange(6, dtype=np.int16).reshape(2, 3), np.zeros((0, 4), dtype=">f8")],
        "t": torch.arange(3.0),
        "plain": [None, True, 2, 2.5, "x"],
    }
    out = decode(encode(value))
    assert list(out) == ["scalars", 7, "t", "plain"]  # the int key stays an int
    assert isinstance(out["scalars"], tuple)
    assert [type(v) for v in out["scalars"]] == [np.float32, np.int64, np.bool_]
    assert out["scalars"] == (1.5, -3, True)
    a, b = out[7]
    assert a.dtype == np.int16 and a.shape == (2, 3) and a.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert b.dtype == np.dtype(">f8") and b.shape == (0, 4)
    assert torch.equal(out["t"], torch.arange(3.0))
    assert out["plain"] == [None, True, 2, 2.5, "x"]


def test_encoding_copies_tensors_and_arrays():
    t, a = torch.zeros(2), np.zeros(2)
    data = encode([t, a])
    t += 1
    a += 1
    assert decode(data)[0].tolist() == [0.0, 0.0] and decode(data)[1].tolist() == [0.0, 0.0]


def test_random_states_round_trip_and_stay_shared():
    rs = np.random.RandomState(3)
    rs.rand(5)
    out = decode(encode({"a": rs, "b": [rs]}))
    assert out["a"] is out["b"][0] and out["a"] is not rs
    assert out["a"].rand(4).tolist() == rs.rand(4).tolist()


def test_objects_outside_minatar_are_refused_both_ways():
    class Local:
        pass

    with pytest.raises(CodecError, match="cannot encode object of type"):
        encode(Local())
    with pytest.raises(CodecError, match="object arrays cannot be encoded"):
        encode(np.array([object()], dtype=object))
    evil = {"__obj__": "subprocess:Popen", "id": 0, "attrs": {}}
    with pytest.raises(CodecError, match="refusing to rebuild an object of module 'subprocess'"):
        decode(evil)
    raw = {"__nd__": torch.zeros(8, dtype=torch.uint8), "dtype": "|O", "shape": [1]}
    with pytest.raises(CodecError, match="object arrays cannot be decoded"):
        decode(raw)


def test_malformed_input_is_a_codec_error():
    for bad in ({"__tuple__": 3}, {"__nd__": "x", "dtype": "<f4", "shape": [1]}, {"what": 1}, [1]):
        with pytest.raises(CodecError):
            decode(bad)
