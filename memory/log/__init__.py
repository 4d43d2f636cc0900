"""The event log: the one source of truth every projection and every context is built from.

Open ``contract`` for the ``EventLog`` protocol and the guarantees every face of the log
keeps; ``events`` for the event values (``NewEvent`` in, ``RecordedEvent`` out) and their
checks; ``schemas`` for the JSON Schema contract of each event type; ``eventlog`` for
``Log`` (append, read, read_session, subscribe, head) and its guarantees; ``sql`` for every
statement the log runs (the one place the SQL lives, shared by any face of the log);
``group`` for group commit of concurrent appends; ``keyring`` for the per-actor keys and
epochs a process caches; ``sealing`` for payload encryption; ``master_key`` for the key
that wraps them; ``rand`` for the random bytes event ids and nonces draw from. The layers
above import from here, not from those modules; ``sql`` is public as a namespace, because
every face of the log (and forgetting, which appends tombstones) runs the same statements.
"""

from . import group, sql
from .contract import EventLog, EventSubscription
from .eventlog import ANY, NO_STREAM, Log, Subscription
from .events import (
    Appended,
    NewEvent,
    RecordedEvent,
    check_id,
    message,
    note,
    parse_event_id,
    tool_call,
    tool_result,
)
from .master_key import MasterKeys, generate_master_key, rotate_master_key
from .schemas import SchemaRegistry
from .sealing import Crypto

__all__ = [
    "ANY",
    "NO_STREAM",
    "Appended",
    "Crypto",
    "EventLog",
    "EventSubscription",
    "Log",
    "MasterKeys",
    "NewEvent",
    "RecordedEvent",
    "SchemaRegistry",
    "Subscription",
    "check_id",
    "generate_master_key",
    "group",
    "message",
    "note",
    "parse_event_id",
    "rotate_master_key",
    "sql",
    "tool_call",
    "tool_result",
]
