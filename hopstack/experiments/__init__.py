"""Running pipelines on benchmarks: metrics, evaluation, variant grids, comparison with significance tests, reports."""
