"""Vision-language model backends: presets, loading, tiny offline models, and the three requests."""
