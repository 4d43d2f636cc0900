import memory
from memory.pg import engine as db


def test_append_and_read_back(store: memory.Store) -> None:
    out = store.append("s1", [memory.message("user", "hello"), memory.note("likes tea")],
                       actor="alice")
    assert [a.version for a in out] == [1, 2]
    events = store.read_session("s1")
    assert [e.type for e in events] == ["message", "note"]
    assert events[0].payload == {"role": "user", "content": "hello"}


def test_json_from_the_server_is_parsed_whatever_its_numbers(database_url: str) -> None:
    """jsonb values come back through orjson (memory/pg/engine.py); a number orjson refuses (an
    integer beyond 64 bits, which jsonb holds) falls back to the standard library."""
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT '{\"small\": 1.5, \"big\": 1e30, \"text\": \"é\"}'::jsonb, "
                "'[1, 2]'::json").one()
    finally:
        engine.dispose()
    assert row[0] == {"small": 1.5, "big": 10**30, "text": "é"}
    assert row[1] == [1, 2]
