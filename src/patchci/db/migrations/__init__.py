"""Alembic migration scripts for the patchci database (run through patchci.db.migrate)."""
