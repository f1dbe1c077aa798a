"""Task data without a validation library: readers, bundled MovieLens tasks, joins, splits,
vocabularies and prepared tables (see prepare.py for the on-disk layout, prepared.py to load)."""
