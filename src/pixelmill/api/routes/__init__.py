"""Route modules: batches, images (uploads and rendition files), health and metrics."""
