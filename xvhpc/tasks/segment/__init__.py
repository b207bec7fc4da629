"""Semantic segmentation (``task: segment``): per-pixel classes from PNG label maps or COCO masks."""
