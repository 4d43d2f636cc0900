"""The vector codec: how pgvector values go to the server and come back as numpy arrays.

A query vector goes as pgvector's text literal; rows of vectors come back in binary
transfer (``vector_send``: int16 dimensions, int16 unused, then big-endian float4s),
decoded for a whole result in one numpy call, which is what makes reading a scope of
20k x 384 vectors cheap. A single vector column read through the text protocol (or with
pgvector's psycopg types registered) becomes a float32 array too (:func:`to_array`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

HEADER_BYTES = 4
"""pgvector's binary send format: int16 dimensions, int16 unused, then the float4s."""


def vector_literal(vec: np.ndarray) -> str:
    """A vector as pgvector's text literal ``[x,y,...]`` (float32, 7 significant digits:
    what float4 holds, so the server reads back the same numbers)."""
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vec, dtype=np.float32)) + "]"


def decode_vectors(blobs: Sequence[Any]) -> np.ndarray:
    """pgvector's binary send format, one blob per row, as one float32 matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    raw = [bytes(b) for b in blobs]
    width = len(raw[0])
    if any(len(b) != width for b in raw):
        raise ValueError("vectors of one generation have different dimensions")
    dim = (width - HEADER_BYTES) // 4
    flat = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), width)
    matrix = flat[:, HEADER_BYTES:].copy().view(">f4").astype(np.float32)
    return matrix.reshape(len(raw), dim)


def binary_rows(conn: sa.Connection, sql: str, params: Any) -> list[Any]:
    """The rows of ``sql`` in binary transfer (vectors come as pgvector's send format,
    for :func:`decode_vectors`)."""
    raw = conn.connection.driver_connection
    with raw.cursor(binary=True) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def to_array(value: Any) -> np.ndarray:
    """A vector column as float32, whether the connection has pgvector's types registered
    (a ``Vector`` or an array) or not (the text ``[1,2,...]``)."""
    if isinstance(value, str):
        return np.asarray([float(x) for x in value.strip("[]").split(",") if x],
                          dtype=np.float32)
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)
