"""Adapters that let agent frameworks use this library as their memory.

Each framework gets one small module here (``memory.integrations.mcp``, ...); each imports
its framework's package, which an optional extra of the distribution installs, so importing
``memory`` alone never needs them.
"""
