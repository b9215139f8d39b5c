"""Placeholder: filled in by the delegate work (issue 11)."""
