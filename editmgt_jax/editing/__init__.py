"""Host-side helpers of the Editor (image I/O, buckets, masks, paste-back, heatmaps)."""
