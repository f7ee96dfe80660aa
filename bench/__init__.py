"""Side-by-side benchmarks of the project against raw Celery (make bench)."""
