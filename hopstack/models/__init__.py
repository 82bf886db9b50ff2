"""Model backends (embedders; LLMs and cross-encoders come with the model-layer issue) and the offline registry."""
