"""Task data contracts: the task.yaml model (manifest.py), GX suites (suites.py), the one error type
(errors.py) and ingestion (ingest.py: ingest_task, validate_task_dir, PreparedRef)."""
