"""trimtab: an open-source portfolio manager for crypto."""

__version__ = "0.1.0"
