"""Conversion to full-integer TFLite, int8 verification, inspection and the sidecar metadata."""
