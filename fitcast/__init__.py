"""fitcast core: what server, client and the model packages share.

The manifest schema, media I/O, metrics, storage layout and errors live here so
that the viewer (``client``) can depend on them without pulling in torch or
FastAPI.
"""

__version__ = "0.1.0"
