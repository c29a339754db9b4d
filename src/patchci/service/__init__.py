"""Restartable jobs the daemon runs, one module per job: ingest first."""
