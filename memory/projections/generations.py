"""The catalogue of generations (``memory_projections``): reading it, the live generation
readers select, and whether a projection's configuration matches what a generation was
built with.

Every build of a projection is a *generation* (a row of ``memory_projections``):
``building`` while it is filled from position 0, ``live`` once it serves reads (at most
one per name), ``retired`` after a newer one replaced it (memory/projections/rebuild.py).
Readers select the live generation in the same statement as the rows
(``generation = (SELECT generation FROM memory_projections WHERE name = ... AND status =
'live')``), see :func:`live_generation_sql`.

The generation's ``config`` records what shaped its rows (for chunks: the embedding model
and its dimension, the chunking rule). A runner whose projection is configured differently
from the live generation refuses to write to it (:func:`check_config` raises
:class:`ProjectionConfigMismatch`) instead of mixing, say, two vector spaces; a rebuild
builds the new configuration beside the old one and switches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .projection import Projection, ProjectionConfigMismatch


@dataclass(frozen=True)
class Generation:
    """One build of a projection: its number, status, configuration and checkpoint."""

    name: str
    generation: int
    status: str
    config: dict[str, Any]
    position: int


def full_config(projection: Projection) -> dict[str, Any]:
    """The configuration recorded with a generation (JSON round-tripped, so comparable
    with what the database gives back)."""
    return json.loads(json.dumps({"version": projection.version, **projection.config()},
                                 sort_keys=True))


def live_generation_sql(name: str) -> str:
    """A scalar subquery for the live generation of ``name`` (a literal: names are ours)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad projection name {name!r}")
    return (f"(SELECT generation FROM memory_projections WHERE name = '{name}' "
            "AND status = 'live')")


def generations(conn: sa.Connection, name: str) -> list[Generation]:
    rows = conn.exec_driver_sql(
        "SELECT name, generation, status, config, position FROM memory_projections "
        "WHERE name = %s ORDER BY generation", (name,)).fetchall()
    return [Generation(r[0], r[1], r[2], r[3] or {}, r[4]) for r in rows]


def live_generation(conn: sa.Connection, name: str) -> Generation | None:
    """The generation of ``name`` that serves reads, if any."""
    for g in generations(conn, name):
        if g.status == "live":
            return g
    return None


def describe_config(config: dict[str, Any]) -> str:
    model = config.get("model")
    if model is not None:
        return f"model {model!r} ({config.get('dim')} dims)"
    return json.dumps(config, sort_keys=True)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two configurations, e.g. ``version 1 -> 2, pieces (none) ->
    true``: the model alone does not say why two generations differ."""
    def show(config: dict[str, Any], key: str) -> str:
        return json.dumps(config[key], sort_keys=True) if key in config else "(none)"

    keys = sorted(k for k in set(old) | set(new)
                  if k not in old or k not in new or old[k] != new[k])
    return ", ".join(f"{k} {show(old, k)} -> {show(new, k)}" for k in keys)



def check_config(projection: Projection, gen: Generation) -> None:
    """Raise :class:`ProjectionConfigMismatch` unless ``projection`` is configured as
    ``gen`` was built (rows of two configurations are never mixed)."""
    name = projection.name
    want = full_config(projection)
    if gen.config != want:
        raise ProjectionConfigMismatch(
            f"projection {name!r}: the live generation {gen.generation} was built "
            f"with {describe_config(gen.config)}, this runner has "
            f"{describe_config(want)} (what differs: "
            f"{config_changes(gen.config, want)}). Rows of two configurations are never "
            f"mixed: re-project to build the new one beside the old and switch when done "
            f"(`memory reproject {name}"
            + (" --model PATH` or `--embedder NAME`)"
               if gen.config.get("model") != want.get("model")
               else "`)")
            + ", or use the configuration the live generation was built with.")
