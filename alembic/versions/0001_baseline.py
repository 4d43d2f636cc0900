"""The baseline schema: the event log, tenancy, keys, projections, least privilege.

Revision ID: 0001
Revises:

The SQL is in alembic/sql/, one file per concern, run in name order; ``{{NAME}}`` in it
stands for a constant of memory/pg/constants.py (the lock keys, SQLSTATEs, the NOTIFY
channel, role names), which the library uses too, so each value is written once.

The log and its guarantees (01_log.sql, 05_append.sql)
-------------------------------------------------------
``memory_events`` is the one source of truth: every projection and every context is built
from it. Every key starts with the tenant (the table can be distributed by tenant).

* **Append-only.** A statement-level trigger, enabled ALWAYS (so also under
  ``session_replication_role = replica``), refuses UPDATE, DELETE and TRUNCATE
  (MM010); data is forgotten by destroying its key, never by rewriting history.
* **No gaps for readers.** Every append takes one transaction-level advisory lock
  (``APPEND_LOCK_KEY``) before it draws positions from ``memory_events_position_seq``
  and holds it until commit, so positions become visible in increasing order and a
  reader's checkpoint "everything up to the highest position seen" is always safe
  (memory/log/sql.py says why this and not the xid horizon).
* **Idempotency.** An append whose event ids are all in the log with the same content
  in the same session returns the original rows (``duplicate``); an id re-used for
  other content, or part of a batch re-sent alone, is refused (MM002).
* **Optimistic concurrency.** An append may name the session version it expects (MM001
  otherwise); a session belongs to one actor (MM003).

Appends go through ``memory_append_request`` (one append), ``memory_append_set`` (a group
of appends in one INSERT, the common case) and ``memory_append_group`` (a group, each
request in its own subtransaction, the fallback that defines the rules);
memory/log/group.py gathers concurrent appends into groups so they share the lock, the
commit and the WAL flush. A wake-up (NOTIFY on ``NOTIFY_CHANNEL``, empty payload) follows
every append. ``memory_append`` is the first, array-based form, kept with the same rules.

Tenancy and least privilege (04_tenancy.sql, 07_privileges.sql)
----------------------------------------------------------------
Each tenant has its own LOGIN role, ``ROLE_PREFIX`` + 24 hex digits of
``sha256(database || 0x1f || tenant)``, made by ``memory_ensure_tenant_role`` (owner
only) and mapped in ``memory_tenant_roles`` (owner only: forced row-level security, no
policy). ``memory_tenant()`` (SECURITY DEFINER, STABLE) returns the tenant of
``session_user``, which no statement of a session can change; any other login maps to
NULL and sees nothing. Every table with a ``tenant`` column has FORCEd row-level security
and one policy, ``tenant = (SELECT memory_tenant())`` (``memory_secure_table``).
Tenant roles are members of ``APP_ROLE`` (NOLOGIN), which holds USAGE on the schema,
SELECT on the tenant tables and ``memory_projections``, EXECUTE on the functions the
library calls, and only the direct writes forgetting needs (tests/pg/test_least_privilege.py
holds the allow-list); nothing on the position sequence and no write to the log. Every
function that writes is SECURITY DEFINER with a pinned ``search_path`` and takes the tenant
from ``memory_caller_tenant``: a tenant role may name only its own tenant (MM030); the
owner may name any. Input of the wrong shape or size is refused whole (MM031). EXECUTE on
every ``pg_advisory_*`` function is revoked from PUBLIC (needs a superuser): the append,
epoch and projection locks are the owner's. The owner (the role that runs this
migration) needs BYPASSRLS or superuser for cross-tenant maintenance (the projection
runner, master-key rotation), since FORCE applies to it too.

Keys, epochs, secrets (03_keys.sql, 06_secrets.sql)
---------------------------------------------------
``memory_keys``: one data key per (tenant, actor), wrapped by the master key, which never
reaches the database. A sealed event's key derives from its actor's key *and* a secret:
its batch's (``memory_event_secrets`` row ``s:...``, the 32-byte secrets of one append
packed in event order), its epoch's (row ``e:...``, one secret for many appends of an
actor; an append under it only checks and holds it: a shared advisory lock,
``memory_epoch_lock``, that a forget takes exclusively), or its own
(``memory_event_keys``). Destroying either side makes the payload unrecoverable without
touching the log: forgetting an actor deletes its key and its secrets rows; forgetting an
event zeros its 32 bytes (``memory_forget_secrets``) or destroys its epoch after keeping
the other events' keys. A destroyed key or epoch fails the append (MM004, nothing
written). ``memory_forget_requests`` records a forget before its work starts, so a crash
half-way is completed by the next call; ``erased_at`` marks the physical erasure done
(memory/erasure.py).

Projections and the quarantine (02_projections.sql)
---------------------------------------------------
Derived and disposable. ``memory_projections`` holds each projection's generations and
checkpoint; a rebuild is a new generation built beside the live one and switched to in
one transaction, so chunks, summaries, summary state and words carry the generation in
every key. The embedding column has no fixed dimension; each chunks generation gets its
own partial HNSW index on ``embedding::vector(dim)``, made by the runner when it goes
live (memory/projections/chunks.py). ``pieces`` holds a chunk's sentence vectors;
``memory_words`` each actor's vocabulary with word vectors. ``memory_quarantine`` records
an event a projection cannot process, in the transaction that moves its checkpoint past
it, so the projection goes on with every other event (memory/projections/runner.py).

Statistics off for content (08_statistics.sql)
----------------------------------------------
ANALYZE copies sample values into ``pg_statistic``, beyond a forget's reach: every text,
JSON, bytes, tsvector or vector column of a ``memory_*`` relation has a statistics target
of 0, except the identifier columns of ``STATISTICS_ALLOWED``.

Downgrade (alembic/sql/downgrade.sql)
-------------------------------------
Drops every table, function, policy and the sequence, drops the tenant roles this
database mapped (roles are cluster-wide: one still in use elsewhere stays, with a
notice), revokes ``APP_ROLE``'s privileges here and gives the advisory-lock functions
back to PUBLIC. ``APP_ROLE`` itself and the ``vector`` extension stay: other databases
and schemas may use them.

Rules for the migrations that follow (alembic/README.md)
--------------------------------------------------------
A migration never imports another. One that changes a function carries its whole new
text (CREATE OR REPLACE FUNCTION with the full body), never a splice of an older one.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from memory.pg.constants import render_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parent.parent / "sql"
UPGRADE_FILES = ("01_log.sql", "02_projections.sql", "03_keys.sql", "04_tenancy.sql",
                 "05_append.sql", "06_secrets.sql", "07_privileges.sql", "08_statistics.sql")


def render(name: str) -> str:
    """The SQL of alembic/sql/``name``, its ``{{NAME}}`` placeholders filled in."""
    return render_sql((SQL / name).read_text(encoding="utf-8"), f"alembic/sql/{name}")


def upgrade() -> None:
    for name in UPGRADE_FILES:
        op.execute(render(name))


def downgrade() -> None:
    op.execute(render("downgrade.sql"))
