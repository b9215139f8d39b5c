"""Reports of a farm run for CI: :mod:`.junit` (JUnit XML) and :mod:`.html` (one self-contained page)."""
