"""SAM-HQ models: the registry (build + load) and the batched engine."""
