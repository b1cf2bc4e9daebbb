"""One intercepted turn, one module per phase: ``request`` (read, decode, limits), ``prepare``
(identity → load → context → inject), ``capture`` (JSON or SSE answer → text + usage),
``recorder`` (build the turn, commit it whatever becomes of the request, own the commits in
flight), ``tasks`` (asynchronous task polls), ``shannon`` (Shannon's task stream) and ``route``
(the handler wiring them)."""

from .recorder import TurnRecorder
from .route import TurnRoute

__all__ = ["TurnRecorder", "TurnRoute"]
