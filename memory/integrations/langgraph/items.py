"""``MemoryStore``: LangGraph's long-term store (``BaseStore``) as events in the log.

All items live in one session of one actor (``session``). A put appends a
``langgraph_item`` event (namespace, key, value) and, when the item has text to index, a
``note`` event with that text, which the chunks projection embeds and indexes like any
other note; a later put of the key replaces it, a delete appends ``langgraph_item_deleted``,
and either retracts the old note so retrieval stops finding it. Reads fold the session
(only what is new since the last read is fetched).

``search(query=...)`` ranks the items under the prefix that pass ``filter`` with this
library's hybrid retrieval (:meth:`memory.Store.context`: vectors and full text, fused),
then applies ``offset`` and ``limit``; items it did not rank follow with ``score=None``,
as LangGraph's in-memory store does for items without vectors.

The index configuration: ``fields`` (LangGraph paths such as ``"text"``, ``"a.b[*]"``,
``"$"``) chooses the indexed text, per store or per put (``index=[...]``, ``index=False``);
without an index configuration the whole value is indexed. Embedding is the projection's
(``embedder``, the library's default model unless given), so ``embed`` is refused, and
``dims`` must equal the embedder's. TTLs are not supported (``supports_ttl`` is False).

Sync over the sync :class:`memory.Store`; ``abatch`` runs ``batch`` in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    validate_op_namespace,
)
from langgraph.store.base.embed import get_text_at_path, tokenize_path

from ...errors import ConfigurationError, InvalidArgument
from ...log import NewEvent, RecordedEvent, note
from . import events
from .matching import matches_filter, matches_namespace

Key = tuple[tuple[str, ...], str]
_BUDGET = 1_000_000


class MemoryStore(BaseStore):
    """A LangGraph store on a :class:`memory.Store`: pass it to
    ``graph.compile(store=...)``; nodes reach it as ``store`` / ``runtime.store``."""

    supports_ttl = False

    def __init__(self, store: Any, *, actor: str, session: str = "langgraph-store",
                 index: IndexConfig | None = None, embedder: Any = None) -> None:
        if not isinstance(actor, str) or not actor:
            raise InvalidArgument("actor must be a non-empty string")
        self.store = store
        self.actor = actor
        self.session = session
        self.embedder = embedder
        self.fields = self._fields(index)
        events.register(store.registry)
        self._lock = threading.Lock()
        self._items: dict[Key, tuple[Item, str | None]] = {}
        self._version = 0

    def _fields(self, index: IndexConfig | None) -> list[str]:
        if not index:
            return ["$"]
        unknown = set(index) - {"dims", "embed", "fields"}
        if unknown:
            raise ConfigurationError(f"index configuration keys not supported: {sorted(unknown)}")
        if index.get("embed") is not None:
            raise ConfigurationError(
                "MemoryStore embeds with the store's projection embedder, not the index's "
                "'embed': pass embedder=<a memory.embedding.Embedder> (or none, for the "
                "default model) and keep 'fields' in the index configuration")
        dims = index.get("dims")
        if dims is not None:
            if self.embedder is None:
                from ...embedding import default_embedder
                self.embedder = default_embedder()
            if dims != self.embedder.dim:
                raise ConfigurationError(
                    f"index dims is {dims} but the embedder makes {self.embedder.dim}-"
                    "dimensional vectors: leave 'dims' out or pass the matching embedder")
        fields = index.get("fields") or ["$"]
        if not all(isinstance(f, str) and f for f in fields):
            raise ConfigurationError("index fields are non-empty path strings")
        return list(fields)

    # -- the folded state ----------------------------------------------------------------

    def _refresh(self) -> None:
        for e in self.store.read_session(self.session, self._version + 1):
            self._version = max(self._version, e.version)
            if e.forgotten or e.type not in (events.ITEM_PUT, events.ITEM_DELETED):
                continue
            self._apply(e)

    def _apply(self, e: RecordedEvent) -> None:
        p = e.payload
        key: Key = (tuple(p["namespace"]), p["key"])
        if e.type == events.ITEM_DELETED:
            self._items.pop(key, None)
            return
        before = self._items.get(key)
        created = before[0].created_at if before else e.recorded_at
        self._items[key] = (Item(value=p["value"], key=key[1], namespace=key[0],
                                 created_at=created, updated_at=e.recorded_at), p["note_id"])

    # -- batch ---------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        with self._lock:
            self._refresh()
            results: list[Result] = []
            puts: dict[Key, PutOp] = {}
            for op in ops:
                if isinstance(op, GetOp):
                    found = self._items.get((tuple(op.namespace), op.key))
                    results.append(found[0] if found else None)
                elif isinstance(op, SearchOp):
                    results.append(self._search(op))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._namespaces(op))
                elif isinstance(op, PutOp):
                    puts[(tuple(op.namespace), op.key)] = op
                    results.append(None)
                else:
                    raise InvalidArgument(f"unknown LangGraph store operation {type(op)!r}")
            if puts:
                self._write(puts)
            return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _write(self, puts: dict[Key, PutOp]) -> None:
        new: list[NewEvent] = []
        retract: list[str] = []
        for (namespace, key), op in puts.items():
            before = self._items.get((namespace, key))
            if before and before[1]:
                retract.append(before[1])
            if op.value is None:
                if before:
                    new.append(NewEvent(events.ITEM_DELETED,
                                        {"namespace": list(namespace), "key": key}))
                continue
            value = dict(op.value)
            text = self._text(value, op.index)
            note_id = str(uuid.uuid4()) if text else None
            new.append(NewEvent(events.ITEM_PUT, {"namespace": list(namespace), "key": key,
                                                  "value": value, "note_id": note_id}))
            if text:
                new.append(note(text, event_id=note_id))
        if new:
            self.store.append(self.session, new, actor=self.actor)
        if retract:
            self.store.retract(self.session, actor=self.actor, event_ids=retract,
                               reason="langgraph item replaced or deleted")
        self._refresh()

    def _text(self, value: dict[str, Any], index: Any) -> str:
        if index is False:
            return ""
        paths = self.fields if index is None else list(index)
        texts: list[str] = []
        for path in paths:
            if path == "$":
                texts.append(json.dumps(value, ensure_ascii=False, sort_keys=True))
            else:
                texts += [t for t in get_text_at_path(value, tokenize_path(path)) if t]
        return "\n".join(texts)

    # -- reads ---------------------------------------------------------------------------

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        found = [(item, note_id) for (namespace, _), (item, note_id) in self._items.items()
                 if namespace[:len(prefix)] == prefix and matches_filter(item.value, op.filter)]
        scores = self._rank(op.query, found) if op.query and found else {}
        ranked = sorted((pair for pair in found if pair[1] in scores),
                        key=lambda pair: -scores[pair[1]])  # type: ignore[index]
        rest = [pair for pair in found if pair[1] not in scores]
        ordered = ranked + sorted(rest, key=lambda pair: pair[0].updated_at, reverse=True) \
            if op.query else sorted(found, key=lambda pair: pair[0].updated_at, reverse=True)
        page = ordered[op.offset:op.offset + op.limit]
        return [SearchItem(namespace=item.namespace, key=item.key, value=item.value,
                           created_at=item.created_at, updated_at=item.updated_at,
                           score=scores.get(note_id) if note_id else None)
                for item, note_id in page]

    def _rank(self, query: str, found: list[tuple[Item, str | None]]) -> dict[str, float]:
        """Each indexed item's best chunk score for ``query``, keyed by its note's id."""
        from ...retrieval import RetrievalSettings

        notes = {n for _, n in found if n}
        if not notes:
            return {}
        self.store.project(["chunks"], embedder=self.embedder)
        depth = max(50, 4 * len(notes))
        # Items are separate documents, not turns of a conversation: no turn windows, no
        # neighbour or session boosts, only each item's own vector and full-text match.
        settings = RetrievalSettings(
            vector_candidates=depth, text_candidates=depth, neighbour_share=0.0,
            text_window=0, vector_windows=(), vector_window_weights=(), session_prior=0.0,
            speaker_boost=0.0, date_boost=0.0)
        context = self.store.context(query, actor=self.actor, session=f"{self.session}:search",
                                     budget=_BUDGET, settings=settings, embedder=self.embedder)
        scores: dict[str, float] = {}
        for m in context.memories:
            note_id = str(m.event_id)
            if note_id in notes and m.kind == "memory":
                scores[note_id] = max(scores.get(note_id, float("-inf")), float(m.score))
        return scores

    def _namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces = {namespace for namespace, _ in self._items}
        if op.match_conditions:
            namespaces = {ns for ns in namespaces
                          if all(matches_namespace(c, ns) for c in op.match_conditions)}
        if op.max_depth is not None:
            namespaces = {ns[:op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset:op.offset + op.limit]

