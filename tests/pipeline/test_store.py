"""Lineage store: atomic content-addressed states, HEAD round trip, the lineage lock."""
from __future__ import annotations

import threading

import pytest


@pytest.fixture
def store(tmp_path):
    from tasks.settings import Layout
    from tasks.store import LineageStore

    return LineageStore(Layout(tmp_path))


def test_put_state_is_content_addressed_and_idempotent(store):
    def save(tmp):
        (tmp / "state.safetensors").write_bytes(b"abc")
        return "d1"

    assert store.put_state(save) == "d1"
    assert store.put_state(save) == "d1"  # a second copy is dropped, the first kept
    assert (store.state_path("d1") / "state.safetensors").read_bytes() == b"abc"
    assert [p.name for p in store.layout.states.iterdir()] == ["d1"]


def test_failed_save_leaves_nothing(store):
    def save(tmp):
        (tmp / "state.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.put_state(save)
    assert list(store.layout.states.iterdir()) == []


def test_head_round_trip_and_missing_state(store):
    from tasks.errors import PipelineError
    from tasks.store import Head, LearnedTask

    head = Head(lineage="a", tasks=[LearnedTask(name="clicks", kind="sequence", prepared_digest="p",
                                                prepared_path="prepared/clicks/p", state_digest="s1")],
                matrix=[[0.5]])
    store.write_head(head)
    again = store.read_head("a")
    assert again.state_digest == "s1" and again.matrix == [[0.5]] and store.lineages() == ["a"]
    with pytest.raises(PipelineError, match="lineage state s1 is missing"):
        store.state_path("s1")
    with pytest.raises(PipelineError, match="lineage 'b' does not exist"):
        store.require_head("b")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_bad_lineage_names(store, name):
    from tasks.errors import PipelineError

    with pytest.raises(PipelineError, match="is not allowed"):
        store.head_path(name)


def test_second_writer_waits_then_fails_clearly(store):
    from tasks.errors import PipelineError

    held, release = threading.Event(), threading.Event()

    def holder():
        with store.lock("busy", timeout=1):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    messages = []
    try:
        with pytest.raises(PipelineError, match="still in use by another run after 0 s"):
            with store.lock("busy", timeout=0.3, notify=messages.append):
                pass
    finally:
        release.set()
        t.join()
    assert "waiting up to" in messages[0]
    with store.lock("busy", timeout=1):  # free again once the holder is done
        pass
