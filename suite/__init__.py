"""The harness: command line, run records and progress display. It uses backends and problems, never the reverse."""
