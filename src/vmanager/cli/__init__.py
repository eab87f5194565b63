"""The ``vmanager`` command: a thin shell over the library (see :mod:`vmanager.cli.main`)."""
