"""The trained default bundle shipped inside the package (see README)."""
