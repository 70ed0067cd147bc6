"""Subcommands of the ``matnet`` command line (see :mod:`matnet.cli`)."""
