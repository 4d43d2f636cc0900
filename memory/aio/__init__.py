"""The async face: ``store = await memory.aio.open(...)`` or ``async with await
memory.aio.open(...) as store``; see memory/aio/store.py for what runs on async
connections and what runs off the event loop."""

from .log import AsyncLog, AsyncSubscription
from .store import AsyncStore, open

__all__ = ["AsyncLog", "AsyncStore", "AsyncSubscription", "open"]
