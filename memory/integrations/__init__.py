"""Adapters that plug this store into agent frameworks as their own memory: one module per
framework, each importing its framework only when it is imported (optional extras)."""
