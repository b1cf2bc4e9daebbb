"""The bundled demo: a small weather backend and the scripted conversation played through the sidecar."""
