"""The public face: open a store, append, read, subscribe (and, as they land, project and
build context). A Store is bound to one tenant and, when it can make tenant roles, logs
in as that tenant's role (memory/pg/tenancy.py); ``store.for_tenant(t)`` gives another
tenant's face, with that tenant's own connections, owned by the store that made it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from . import forget as forget_mod
from .config import DEFAULT_TENANT, Limits
from .errors import ConfigurationError
from .forget import ForgetResult
from .log import (
    ANY,
    MAX_VERSION,
    Appended,
    Crypto,
    Log,
    NewEvent,
    RecordedEvent,
    SchemaRegistry,
    Subscription,
    check_id,
    check_int,
    group,
    views,
)
from .pg import TenantEngines, can_manage_roles, tenant_scope
from .pg import engine as db
from .retrieval import ScopeCache

if TYPE_CHECKING:
    from .embedding import Embedder
    from .projections import Projector, RunSummary
    from .retrieval.ranking import Ranker
    from .retrieval.result import Context, Memory
    from .retrieval.settings import RetrievalSettings
    from .retrieval.tokens import TokenCounter


class Store:
    """A memory store on one PostgreSQL database, scoped to one tenant."""

    def __init__(self, engine: Engine, *, tenant: str = DEFAULT_TENANT,
                 registry: SchemaRegistry | None = None, limits: Limits | None = None,
                 encrypt: bool = True, crypto: Crypto | None = None,
                 maintenance_engine: Engine | None = None, _owns_engine: bool = True,
                 _tenants: TenantEngines | None = None,
                 _scope_cache: ScopeCache | None = None) -> None:
        self.limits = limits or Limits()
        self.tenant = check_id(tenant, "tenant", self.limits)
        self.engine = engine
        # Cross-tenant work (the projection runner) needs a connection that row-level
        # security does not confine to one tenant: the owner's (memory/pg/tenancy.py).
        self.maintenance_engine = maintenance_engine or engine
        self.log = Log(engine, registry, self.limits, encrypt=encrypt, crypto=crypto)
        self._owns_engine = _owns_engine
        self._tenants = _tenants  # the tenants' engines (shared with for_tenant's stores)
        self.scope_cache = _scope_cache if _scope_cache is not None else ScopeCache()
        """What retrieval keeps in memory between calls (scope entries, lexemes, word
        vectors), passed into every retrieval call this store makes; shared with the
        stores of :meth:`for_tenant` (an entry's key holds its tenant)."""

    @classmethod
    def open(cls, url: str | None = None, *, tenant: str = DEFAULT_TENANT,
             limits: Limits | None = None, migrate: bool = True,
             encrypt: bool = True, tenant_roles: bool | None = None) -> Store:
        """Open the store at ``url``; with no URL, ``MEMORY_DATABASE_URL``; with neither,
        the embedded server (started if needed). Migrations run unless ``migrate=False``.

        ``encrypt`` (default on) seals payloads and metadata under per-actor keys, which
        is what makes :meth:`forget` possible (memory/log/sealing.py). A forget that a crash
        left half-done in this tenant is completed here.

        ``tenant_roles``: whether the library logs in as each tenant's own role, made and
        managed by the library, to which row-level security binds it (memory/pg/tenancy.py),
        keeping the URL's role, the owner, for migrations and cross-tenant maintenance
        (``maintenance_engine``). The default does so when the URL's role may make tenant
        roles (it runs the migrations); ``False`` uses the URL's role for everything (an
        owner's URL then sees every tenant; a tenant role's URL its own tenant only);
        ``True`` refuses to open without them."""
        resolved = db.resolve_url(url)
        limits = limits or Limits()
        check_id(tenant, "tenant", limits)
        owner = db.make_engine(resolved, limits)
        try:
            if migrate:
                db.migrate(owner)
            if tenant_roles is None:
                tenant_roles = can_manage_roles(owner)
            elif tenant_roles and not can_manage_roles(owner):
                raise ConfigurationError(
                    f"role {owner.url.username!r} cannot make tenant roles: open the store "
                    "with the URL of the role that owns the schema (it runs the "
                    "migrations), or with tenant_roles=False")
            if not tenant_roles:
                store = cls(owner, tenant=tenant, limits=limits, encrypt=encrypt)
            else:
                crypto = Crypto.from_environment()
                tenants = TenantEngines(
                    owner, resolved, limits,
                    lambda: crypto.master.derive(b"tenant role passwords"))
                store = cls(tenants.engine(tenant), tenant=tenant, limits=limits,
                            encrypt=encrypt, crypto=crypto, maintenance_engine=owner,
                            _tenants=tenants)
        except BaseException:
            owner.dispose()
            raise
        forget_mod.complete_pending(store.log, store.tenant)
        return store

    def for_tenant(self, tenant: str) -> Store:
        """The same database seen as another tenant: with tenant roles, through that
        tenant's own engine (made on first use, disposed when this store closes)."""
        check_id(tenant, "tenant", self.limits)
        engine = self._tenants.engine(tenant) if self._tenants is not None else self.engine
        return Store(engine, tenant=tenant, registry=self.registry, limits=self.limits,
                     encrypt=self.log.encrypt, crypto=self.log.crypto,
                     maintenance_engine=self.maintenance_engine, _owns_engine=False,
                     _tenants=self._tenants, _scope_cache=self.scope_cache)

    @property
    def registry(self) -> SchemaRegistry:
        return self.log.registry

    def close(self) -> None:
        if not self._owns_engine:
            return
        if self._tenants is not None:
            # every tenant's engine, and the append connections the log keeps for each
            self._tenants.close(lambda engine: group.appender(engine).close())
        else:
            self.log.close()  # the append connections (memory/log/group.py)
            self.engine.dispose()
        if self.maintenance_engine is not self.engine:
            self.maintenance_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the log -------------------------------------------------------------------

    def append(self, session_id: str, events: NewEvent | Sequence[NewEvent], *, actor: str,
               expected_version: int | None = ANY) -> list[Appended]:
        """Append one event or a batch to ``session_id`` (a session belongs to one actor)."""
        views.refuse_control(events)
        return self.log.append(self.tenant, actor, session_id, events,
                               expected_version=expected_version)

    def read_session(self, session_id: str, from_version: int = 1, *,
                     as_of: int | None = None) -> list[RecordedEvent]:
        """The session's view in order (memory/log/views.py): for a branch, its parent's
        events up to the fork point, then its own; events hidden by a retraction left out;
        each event's ``session_id`` is its origin. ``from_version`` > 1 keeps the
        session's own events from that version on. ``as_of``: the view as the log stood
        at that position (a retraction after it hides nothing yet)."""
        check_int(from_version, "from_version", 0, MAX_VERSION)
        events = views.read_view(self.log, self.tenant, session_id, as_of=as_of).events
        if from_version > 1:
            events = [e for e in events
                      if e.session_id == session_id and e.version >= from_version]
        return events

    def view(self, session_id: str, *, as_of: int | None = None) -> views.SessionView:
        """The session's view with everything it hides, each event's origin and the
        retraction that hides it (what ``memory log`` shows)."""
        return views.read_view(self.log, self.tenant, session_id, as_of=as_of)

    def fork(self, session_id: str, *, at_version: int, new_session: str, actor: str,
             event_id: uuid.UUID | str | None = None) -> Appended:
        """Start ``new_session`` as a branch of ``session_id`` at its own version
        ``at_version``: its view is the parent's up to there, then its own events (a
        ``session_forked`` event, its version 1; nothing is copied). Refused with a typed
        error, nothing written: a parent without events (UnknownSession), of another
        actor (SessionOwnershipError), a version past its head (ForkPointError), a new
        session that exists (SessionExists)."""
        return views.fork(self.log, self.tenant, actor, session_id, at_version=at_version,
                          new_session=new_session, event_id=event_id)

    def retract(self, session_id: str, *, actor: str,
                event_ids: Iterable[uuid.UUID | str] | None = None, last: int | None = None,
                all: bool = False, reason: str = "",
                event_id: uuid.UUID | str | None = None) -> Appended:
        """Hide events from the session's view, recent turns and memories from now on:
        ``event_ids`` (items of its view, own or inherited), the ``last`` n visible items,
        or ``all`` of them, with one ``events_retracted`` event. Nothing is erased
        (:meth:`forget` does that); ``as_of`` before it still shows them. ``reason`` is
        stored in clear: no personal data."""
        return views.retract(self.log, self.tenant, actor, session_id, event_ids=event_ids,
                             last=last, everything=all, reason=reason, event_id=event_id)

    def read(self, from_position: int = 0, *, actor: str | None = None
             ) -> Iterator[RecordedEvent]:
        """This tenant's events after ``from_position``, in log order."""
        return self.log.read(from_position, tenant=self.tenant, actor_id=actor)

    def subscribe(self, from_position: int = 0, *, poll_interval: float = 1.0) -> Subscription:
        return self.log.subscribe(from_position, tenant=self.tenant,
                                  poll_interval=poll_interval)

    def head(self) -> int:
        return self.log.head(self.tenant)

    # -- forgetting (memory/forget.py) ---------------------------------------------------

    def forget(self, *, actor: str | None = None,
               event_ids: Iterable[uuid.UUID | str] | None = None, erase: bool = True,
               flush_wal: bool = False, rewrite_derived: bool = False,
               erase_wait: float = 10.0) -> ForgetResult:
        """Forget every event of ``actor`` in this tenant, or the events ``event_ids``:
        their keys are destroyed (the log itself is never rewritten), everything derived
        from them (chunks, vectors, full text, summaries, recorded contexts that cited
        them) is deleted, and a ``forgotten`` tombstone (ids only) is appended. Idempotent.

        Then (``erase``, the default) the deleted bytes are erased from the live data
        files on ``maintenance_engine``: the key tables rewritten, the derived tables
        vacuumed (memory/erasure.py; it waits up to ``erase_wait`` seconds for older
        transactions). ``result.erasure`` says whether that was done or is pending and
        why (e.g. the store has only the app role's connection: ``memory forget
        --erase-pending`` with the owner's URL completes it). ``flush_wal`` also runs a
        checkpoint and a WAL switch so the WAL holding the bytes is recycled sooner;
        ``rewrite_derived`` rewrites the derived tables too (VACUUM FULL: no freed space
        left holding derived text, but reads of them wait meanwhile).

        This store's retrieval cache (``scope_cache``) drops the tenant's entries for the
        actor (or, for single events, all of the tenant's: which actors they belonged to
        is not known here) at once, so the forgotten text does not stay in memory until
        the next call notices. Other stores' caches notice on their next call
        (memory/retrieval/scopecache.py)."""
        import dataclasses

        from . import erasure
        result = forget_mod.forget(self.log, self.tenant, actor_id=actor, event_ids=event_ids)
        self.scope_cache.forget(self.tenant, actor)
        if erase:
            with tenant_scope(self.tenant):
                done = erasure.erase(self.maintenance_engine, wait_seconds=erase_wait,
                                     flush_wal=flush_wal, rewrite_derived=rewrite_derived)
            result = dataclasses.replace(result, erasure=done)
        return result

    # -- projections (memory/projections) --------------------------------------------

    def projector(self, **options: Any) -> Projector:
        """The projections of this store's database (every tenant: the runner follows the
        whole log). Options go to :class:`memory.projections.Projector` (``embedder``,
        ``summarizer``, ``batch_size``, ``progress``...)."""
        from .projections import Projector

        options.setdefault("progress", False)
        return Projector(self.maintenance_engine, log=self.log, **options)

    def project(self, names: Sequence[str] | None = None, **options: Any) -> list[RunSummary]:
        """Bring the projections (``chunks`` and ``summaries`` by default) up to the head
        of the log; the first call builds them. Returns what each run did."""
        return self.projector(**options).catch_up(names)

    # -- retrieval (memory/retrieval) ------------------------------------------------

    def context(self, query: str, *, actor: str, session: str, budget: int,
                settings: RetrievalSettings | None = None, as_of: int | None = None,
                strong: bool = False, actors: Sequence[str] | None = None,
                record: bool = False, counter: TokenCounter | None = None,
                embedder: Embedder | None = None, ranker: Ranker | None = None) -> Context:
        """What to put in front of the next model call for ``actor`` in ``session``: the
        recent turns verbatim (read from the log, so what was just appended is there), the
        session summary when older turns do not fit, and the memories most relevant to
        ``query`` (this session's older part and the actor's earlier sessions), with their
        sources, in at most ``budget`` tokens (see memory/retrieval/context.py).

        ``actors`` adds other actors whose memories may be searched (never another
        tenant's). ``strong`` catches the projections up first. ``as_of`` rebuilds the
        context as it was when the log ended at that position. ``record`` appends a
        ``context_assembled`` event that :meth:`replay_context` rebuilds exactly.
        """
        from .retrieval import build_context

        with tenant_scope(self.tenant):
            return build_context(self, query, actor=actor, session=session, budget=budget,
                                 settings=settings, as_of=as_of, strong=strong,
                                 actors=actors, record=record, counter=counter,
                                 embedder=embedder, ranker=ranker)

    def search(self, query: str, *, actor: str, limit: int = 10,
               actors: Sequence[str] | None = None, as_of: int | None = None,
               strong: bool = False, settings: RetrievalSettings | None = None,
               counter: TokenCounter | None = None, embedder: Embedder | None = None,
               ranker: Ranker | None = None) -> list[Memory]:
        """The ``limit`` memories of ``actor`` (and of ``actors``, never another
        tenant's) most relevant to ``query``, across its sessions, best first: the search
        and ranking of :meth:`context` without the packing, for a caller that shows or
        picks memories itself. Each :class:`Memory` names its source (event id, session,
        position, chunk) and carries its score, rank and reasons. Events withdrawn by a
        retraction are left out. ``strong`` catches the projections up first; ``as_of``
        searches the log as it stood at that position. Bad arguments raise a typed
        error before anything is read (memory/retrieval/memories.py)."""
        from .retrieval import search_memories

        with tenant_scope(self.tenant):
            return search_memories(self, query, actor=actor, limit=limit, actors=actors,
                                   as_of=as_of, strong=strong, settings=settings,
                                   counter=counter, embedder=embedder, ranker=ranker)

    def replay_context(self, event: RecordedEvent, **kw: Any) -> Context:
        """Rebuild a recorded context (a ``context_assembled`` event) from the log;
        ``.replay_matches`` says whether the messages are identical."""
        from .retrieval import replay

        with tenant_scope(self.tenant):
            return replay(self, event, **kw)
