"""Route modules: pages (HTML), api (JSON under /api/v1), logs, metrics."""
