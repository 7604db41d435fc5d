"""The dashboard's pages, one module per area; each lists its ``ROUTES`` as ``(method, path regex, handler)``."""
