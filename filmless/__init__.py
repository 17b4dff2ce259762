"""Wiring on top of the filmless packages: the command line and settings."""

__version__ = "0.1.0"
