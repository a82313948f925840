"""Command-line entry points (``mmf_run``)."""
