"""The paper's studies for benchmarks.compare: presets, experiments, rendering."""
