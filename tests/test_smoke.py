import memory


def test_append_and_read_back(store: memory.Store) -> None:
    out = store.append("s1", [memory.message("user", "hello"), memory.note("likes tea")],
                       actor="alice")
    assert [a.version for a in out] == [1, 2]
    events = store.read_session("s1")
    assert [e.type for e in events] == ["message", "note"]
    assert events[0].payload == {"role": "user", "content": "hello"}
