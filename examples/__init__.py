"""Runnable examples of using kbai from other services (see examples/README.md)."""
