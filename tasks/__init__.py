"""Prefect tasks of the Conure pipeline. Importing this package configures Prefect's environment
(``tasks.settings.configure_environment``) before Prefect itself is imported."""
from tasks.settings import configure_environment as _configure

_configure()
