"""Adapters that let agent frameworks use a store as their own memory, one small module
per framework (each imports its framework, an optional extra: import the module you use,
e.g. ``memory.integrations.openai_agents``)."""
