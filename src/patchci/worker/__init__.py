"""Executor hosts: `patchci worker` takes jobs from the broker, runs them, uploads results."""
