"""Rebuild and switch: creating a generation beside the live one, making it live in one
transaction, and dropping the rows of retired generations.

``Runner.rebuild()`` fills a new generation (:func:`prepare_building`) beside the live one,
which keeps serving reads and (under its own lock) keeps following the log; once the new
one has caught up, :func:`switch` applies the last events and swaps the statuses in a
single transaction that holds both rows, so readers see either the old or the new
generation, never a mix. A rebuild that stops (crash, Ctrl-C, SIGKILL) resumes from its own
checkpoint next time. Creating and switching happen under the projection's name lock
(memory/projections/locks.py).
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import quarantine
from .applying import Applier, Progress, RunSummary
from .generations import Generation, full_config, generations
from .locks import name_lock, try_writer_xact_lock
from .projection import Projection, ProjectionBusy

log = logging.getLogger(__name__)


def prepare_building(engine: Engine, projection: Projection) -> Generation:
    """The generation to build: an interrupted build of the same configuration is
    resumed; one of another configuration (not being written) is dropped."""
    name = projection.name
    want = full_config(projection)
    with engine.begin() as conn:
        name_lock(conn, name)
        gens = generations(conn, name)
        for g in gens:
            if g.status != "building":
                continue
            if g.config == want:
                return g
            drop_generation(conn, projection, g)
        number = max((g.generation for g in gens), default=0) + 1
        conn.exec_driver_sql(
            "INSERT INTO memory_projections (name, generation, status, config) "
            "VALUES (%s, %s, 'building', %s::jsonb)",
            (name, number, json.dumps(want, sort_keys=True)))
        projection.setup(conn, number)
        return Generation(name, number, "building", want, 0)


def drop_generation(conn: sa.Connection, projection: Projection, g: Generation) -> None:
    """Remove a generation nobody writes (fails with ProjectionBusy if someone does)."""
    name = projection.name
    if not try_writer_xact_lock(conn, name, g.generation):
        raise ProjectionBusy(f"projection {name!r} generation {g.generation} "
                             f"({g.status}) is being written by another runner")
    projection.drop(conn, g.generation)
    quarantine.drop_generation(conn, name, g.generation)
    conn.exec_driver_sql("DELETE FROM memory_projections WHERE name = %s AND "
                         "generation = %s", (name, g.generation))


def switch(applier: Applier, gen: int, summary: RunSummary, bar: Progress) -> None:
    """Apply the last events and make ``gen`` live, in one transaction holding both
    rows (a runner of the old live generation waits, then sees it retired)."""
    name = applier.name
    with applier.engine.begin() as conn:
        name_lock(conn, name, timeout="120s")
        conn.exec_driver_sql(
            "SELECT generation FROM memory_projections WHERE name = %s AND "
            "status IN ('live', 'building') ORDER BY generation FOR UPDATE",
            (name,)).fetchall()
        applier.advance(gen, summary, bar, conn=conn)
        conn.exec_driver_sql(
            "UPDATE memory_projections SET status = 'retired' WHERE name = %s AND "
            "status = 'live'", (name,))
        conn.exec_driver_sql(
            "UPDATE memory_projections SET status = 'live', switched_at = now() "
            "WHERE name = %s AND generation = %s", (name, gen))
    summary.switched = True


def cleanup_retired(engine: Engine, projection: Projection) -> None:
    """Drop the rows of retired generations (their catalogue rows stay, as history).
    A generation still held by a runner is left for the next cleanup."""
    name = projection.name
    with engine.connect() as conn:
        retired = [g for g in generations(conn, name) if g.status == "retired"]
    for g in retired:
        try:
            dropper = getattr(projection, "drop_indexes", None)
            if dropper is not None:
                dropper(engine, g.generation)
            with engine.begin() as conn:
                if not try_writer_xact_lock(conn, name, g.generation):
                    continue
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                projection.drop(conn, g.generation)
                quarantine.drop_generation(conn, name, g.generation)
        except sa.exc.DBAPIError as exc:  # cleanup is best effort
            log.warning("could not drop retired generation %s of %s: %s",
                        g.generation, name, exc)
