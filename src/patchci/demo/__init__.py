"""The bundled demo: a small kernel-like tree, sample series, and a full pipeline run."""
