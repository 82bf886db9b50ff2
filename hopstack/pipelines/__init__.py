"""Loading and validating pipeline YAML; evaluation and comparison of pipelines come with later issues."""
