"""The ``memory`` command: one module per command group, wired together in ``main``.

Open ``main`` for the parser and the log commands (append, read, tail, server), ``options``
for the store options every command shares, ``projections`` for ``memory project``,
``context`` for ``memory context``, ``forget`` for forgetting and master-key commands,
``demo`` for ``memory demo``. The command reaches the library through ``Store`` only.
"""

from .main import main

__all__ = [
    "main",
]
