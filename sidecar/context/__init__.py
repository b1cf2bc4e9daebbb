"""Context engine: places, dates and topics in user messages, and follow-up completion."""

from sidecar.context.gazetteer import Gazetteer, load_gazetteer
from sidecar.context.remote import HttpExtractor
from sidecar.context.resolution import Extractor, Resolution
from sidecar.context.rules import RulesExtractor
from sidecar.context.tokens import estimate_tokens

__all__ = [
    "Extractor",
    "Gazetteer",
    "HttpExtractor",
    "Resolution",
    "RulesExtractor",
    "estimate_tokens",
    "load_gazetteer",
]
