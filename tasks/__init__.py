"""Prefect tasks of the Conure pipeline. Importing this package changes nothing in the caller's process
(no folder, no environment variable): the ``conure`` command calls ``tasks.settings.configure_process``."""
