"""Image-set metrics: Inception features, running statistics, statistics files, numbers."""
