"""Projections: derived, disposable views of the log (chunks, session summaries).

:class:`Projector` is the face: it knows the projections of a store and runs them
(``catch_up``, ``follow``, ``rebuild``, ``reproject``, and ``quarantined``/``retry`` for
the events a projection could not process). :func:`forget` deletes the rows
derived from a forgotten actor or events in every projection and generation. The runner
is in :mod:`memory.projections.runner`, which says where each of its parts lives (the
checkpoint moves with a projection's writes in :mod:`memory.projections.applying`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..embedding import Embedder, default_embedder
from ..errors import ConfigurationError
from ..log import Log
from . import quarantine
from .applying import DEFAULT_BATCH_SIZE, RunSummary
from .chunking import Chunker, split_sentences
from .chunks import ChunksProjection, forget_chunks, hnsw_index_name
from .generations import (
    Generation,
    describe_config,
    full_config,
    generations,
    live_generation,
    live_generation_sql,
)
from .projection import BaseProjection, Projection, ProjectionBusy, ProjectionConfigMismatch
from .quarantine import QuarantinedEvent, is_poison
from .runner import Runner
from .summaries import SummariesProjection, SummaryVersion, forget_summaries, summary_at
from .summarizer import ExtractiveSummarizer, Summarizer, Summary, Turn

DEFAULT_NAMES = ("chunks", "summaries")

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_NAMES",
    "BaseProjection",
    "Chunker",
    "ChunksProjection",
    "ExtractiveSummarizer",
    "Generation",
    "Projection",
    "ProjectionBusy",
    "ProjectionConfigMismatch",
    "Projector",
    "QuarantinedEvent",
    "RunSummary",
    "Runner",
    "SummariesProjection",
    "Summarizer",
    "Summary",
    "SummaryVersion",
    "Turn",
    "check_embedder",
    "describe_config",
    "forget",
    "full_config",
    "generations",
    "hnsw_index_name",
    "is_poison",
    "live_generation",
    "live_generation_sql",
    "split_sentences",
    "summary_at",
]


def forget(conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
           event_ids: Sequence[Any] | None = None) -> int:
    """Delete every projection row derived from ``actor_id`` and/or ``event_ids`` of
    ``tenant``, in every generation, in the caller's transaction. Returns rows deleted.

    Call it in the transaction that forgets (e.g. destroys the actor's key): the derived
    text is gone when the forgetting commits. A later rebuild reads the log again, so the
    log itself must no longer yield the forgotten text (crypto-shredding)."""
    if actor_id is None and not event_ids:
        raise ValueError("forget needs actor_id or event_ids")
    # No extra locking here: a runner batch opens sealed payloads inside its transaction
    # and holds their secrets FOR SHARE (memory/log/sealing.py), so the caller's key
    # destruction already waits for any batch that read the forgotten events.
    return (forget_chunks(conn, tenant, actor_id=actor_id, event_ids=event_ids)
            + forget_summaries(conn, tenant, actor_id=actor_id, event_ids=event_ids)
            + quarantine.forget(conn, tenant, actor_id=actor_id, event_ids=event_ids))


def check_embedder(conn: sa.Connection, embedder: Embedder) -> Generation:
    """The live chunks generation, if ``embedder`` is the model it was built with; raises
    :class:`ProjectionConfigMismatch` otherwise (queries and rows in one vector space)."""
    live = live_generation(conn, "chunks")
    if live is None:
        raise ConfigurationError("the chunks projection has not been built yet "
                                 "(run `memory project` or store.project())")
    if live.config.get("model") != embedder.name or live.config.get("dim") != embedder.dim:
        raise ProjectionConfigMismatch(
            f"the live chunks generation {live.generation} was built with "
            f"{describe_config(live.config)}, the embedder given is {embedder.name!r} "
            f"({embedder.dim} dims); re-project (`memory reproject chunks --model PATH`) "
            "or query with the same model")
    return live


class Projector:
    """The projections of one database, with their runners.

    ``embedder`` (default: the packaged all-MiniLM-L6-v2) is used by the chunks
    projection and the default summarizer; ``summarizer`` replaces the extractive one.
    Projections run over every tenant of the database. Extra keyword arguments go to
    each :class:`Runner` (``batch_size``, ``wait``, ``progress``, ``stop``...).
    """

    def __init__(self, engine: Engine, *, log: Log | None = None,
                 embedder: Embedder | None = None, summarizer: Summarizer | None = None,
                 chunker: Chunker | None = None, summary_every: int = 20,
                 quiet_after: float = 1800.0,
                 projections: Iterable[Projection] | None = None, **runner_options: Any
                 ) -> None:
        self.engine = engine
        self.log = log or Log(engine)
        self._embedder = embedder
        self._summarizer = summarizer
        self._chunker = chunker
        self._summary_every = summary_every
        self._quiet_after = quiet_after
        self._projections: dict[str, Projection] = {}
        for p in projections or ():
            self._projections[p.name] = p
        self.runner_options = runner_options
        self.stop: threading.Event = runner_options.pop("stop", None) or threading.Event()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def names(self) -> list[str]:
        return list(dict.fromkeys([*DEFAULT_NAMES, *self._projections]))

    def projection(self, name: str) -> Projection:
        if name not in self._projections:
            if name == "chunks":
                self._projections[name] = ChunksProjection(self.embedder, self._chunker)
            elif name == "summaries":
                summarizer = self._summarizer or ExtractiveSummarizer(self.embedder)
                self._projections[name] = SummariesProjection(
                    summarizer, every=self._summary_every, quiet_after=self._quiet_after,
                    log=self.log)
            else:
                raise ConfigurationError(f"unknown projection {name!r} "
                                         f"(known: {', '.join(self.names())})")
        return self._projections[name]

    def runner(self, name: str, **options: Any) -> Runner:
        merged = {**self.runner_options, "stop": self.stop, **options}
        return Runner(self.engine, self.projection(name), log=self.log, **merged)

    def catch_up(self, names: Iterable[str] | None = None) -> list[RunSummary]:
        """Bring each projection (all by default) to the head of the log."""
        return [self.runner(n).catch_up() for n in (list(names or []) or self.names())]

    def rebuild(self, name: str) -> RunSummary:
        """Rebuild ``name`` from position 0 beside the live generation, then switch."""
        return self.runner(name).rebuild()

    def reproject(self, name: str, *, embedder: Embedder | None = None) -> RunSummary:
        """Rebuild ``name`` (with ``embedder`` instead of this projector's, any dimension)
        beside the live generation and switch when done. Later runs of ``name`` by this
        projector use the new embedder; other projections keep theirs."""
        if embedder is not None:
            if name == "chunks":
                old = self._projections.get(name)
                keep = ({"pieces": old.pieces, "words": old.words}
                        if isinstance(old, ChunksProjection) else {})
                self._projections[name] = ChunksProjection(embedder, self._chunker, **keep)
            elif name == "summaries" and self._summarizer is None:
                self._projections[name] = SummariesProjection(
                    ExtractiveSummarizer(embedder), every=self._summary_every,
                    quiet_after=self._quiet_after, log=self.log)
            else:
                raise ConfigurationError(f"projection {name!r} does not use an embedder")
        return self.rebuild(name)

    def status(self) -> dict[str, list[Generation]]:
        with self.engine.connect() as conn:
            return {n: generations(conn, n) for n in self.names()}

    def quarantined(self, projection: str | None = None, *, unresolved: bool = True
                    ) -> list[QuarantinedEvent]:
        """Events the projections quarantined (memory/projections/quarantine.py), in
        generations that still exist; ``unresolved=False`` includes resolved ones."""
        with self.engine.connect() as conn:
            return quarantine.entries(conn, projection=projection, unresolved=unresolved)

    def retry(self, ids: Sequence[int] | None = None, *,
              projection: str | None = None) -> list[QuarantinedEvent]:
        """Apply quarantined events again through their projection: the entries ``ids``,
        or every unresolved one (of ``projection``, if given). An entry that applies is
        marked resolved; one that fails again stays, with its newest error. Returns the
        entries as they now stand."""
        with self.engine.connect() as conn:
            if ids is None:
                chosen = quarantine.entries(conn, projection=projection)
            else:
                chosen = [quarantine.by_id(conn, i) for i in ids]
        out: list[QuarantinedEvent] = []
        for name in dict.fromkeys(e.projection for e in chosen):
            out += self.runner(name).retry([e for e in chosen if e.projection == name])
        return out

    def forget(self, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        with self.engine.begin() as conn:
            return forget(conn, tenant, actor_id=actor_id, event_ids=event_ids)

    def follow(self, names: Iterable[str] | None = None, *, poll_interval: float = 1.0,
               handle_signals: bool = True) -> list[RunSummary]:
        """Follow the log with each projection (one thread each) until ``self.stop`` is
        set or, from the main thread, SIGINT/SIGTERM arrives."""
        import signal

        chosen = list(names or []) or self.names()
        runners = [self.runner(n) for n in chosen]
        results: list[RunSummary | BaseException | None] = [None] * len(runners)

        def run(i: int) -> None:
            try:
                results[i] = runners[i].follow(poll_interval=poll_interval,
                                               handle_signals=False)
            except BaseException as exc:
                results[i] = exc
                self.stop.set()

        previous: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stop.set())
        threads = [threading.Thread(target=run, args=(i,), name=f"memory-{r.name}",
                                    daemon=True) for i, r in enumerate(runners)]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [r for r in results if isinstance(r, RunSummary)]
