"""The outbox writer: turns committed to Redis reach PostgreSQL in batches, durably. ``loop`` is
the writer itself, ``retries`` its retry policies, ``status`` what it shows of itself."""

from .loop import OutboxWriter
from .status import WriterHealth

__all__ = ["OutboxWriter", "WriterHealth"]
