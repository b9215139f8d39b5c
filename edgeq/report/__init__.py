"""Reports: JSON (edgeq.report/1) and Markdown."""
