"""``python -m edgeq.runner run --model m.tflite`` (on the host, for tests and the local device)."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
