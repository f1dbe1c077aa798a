import pickle

import pytest
import torch

from conure_core.checkpoint import CheckpointError, load_state, save_state, state_digest
from tests.core.conftest import outputs


def test_save_load_identical_outputs(learned, tasks, tmp_path):
    lineage, _ = learned
    path = save_state(lineage, tmp_path / "state.safetensors")
    assert (tmp_path / "state.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    loaded = load_state(path)
    assert loaded.tasks == lineage.tasks
    assert loaded.free_capacity() == lineage.free_capacity()
    for task in tasks:
        a, b = outputs(lineage, task), outputs(loaded, task)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    # Same state -> same bytes -> same digest.
    again = save_state(loaded, tmp_path / "again.safetensors")
    assert state_digest(again) == state_digest(path)


def test_refuses_pickles(tmp_path, learned):
    torch_file = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, torch_file)
    with pytest.raises(CheckpointError, match="pickle"):
        load_state(torch_file)
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_state(raw)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a state")
    with pytest.raises(CheckpointError, match="not a Conure safetensors"):
        load_state(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state(tmp_path / "missing.safetensors")


def test_loads_state_whose_header_length_starts_with_pickle_byte(tmp_path, learned):
    """A safetensors header length can begin with 0x80 (a pickle's first byte); it must still load."""
    import struct

    lineage, _ = learned
    path = save_state(lineage, tmp_path / "state.safetensors")
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    pad = (0x80 - size % 256) % 256  # spaces after the JSON header are allowed by the format
    padded = struct.pack("<Q", size + pad) + data[8:8 + size] + b" " * pad + data[8 + size:]
    assert padded[:1] == b"\x80"
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(padded)
    loaded = load_state(odd)
    assert loaded.tasks == lineage.tasks
    for name, p in lineage.params.items():
        assert torch.equal(loaded.params[name], p)
