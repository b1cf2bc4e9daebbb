"""User memory across sessions: the facts users state about themselves, kept and injected."""
