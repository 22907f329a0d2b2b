"""Ray wiring and the command line: ingest, annotate, export, stats. Never parses video itself."""
