"""``python -m sidecar``: the command line (``sidecar.cli``)."""

from .cli import main

raise SystemExit(main())
