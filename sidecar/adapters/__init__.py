"""Protocol adapters: what to inject into a request and how to read its answer."""
