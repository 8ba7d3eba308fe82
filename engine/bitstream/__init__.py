"""The .vlmc container."""

from .container import FORMAT_VERSION, MAGIC, Header, pack, unpack

__all__ = ["FORMAT_VERSION", "MAGIC", "Header", "pack", "unpack"]
