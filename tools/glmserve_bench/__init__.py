"""glmserve-bench: a serving benchmark client (see cli.py)."""
