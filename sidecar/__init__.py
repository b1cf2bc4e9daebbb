"""Session Sidecar: conversation memory for a stateless LLM backend, as a reverse proxy."""

__version__ = "0.1.0"
