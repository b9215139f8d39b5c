"""Write the JSON Schemas of edgeq's result and report files to docs/schemas/ (run after changing
edgeq/result.py; tests/test_schemas.py fails while the published files differ from the classes).

    .venv/bin/python scripts/gen_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeq.result import Report, Result, json_schema  # noqa: E402

OUT = REPO / "docs" / "schemas"


def published() -> dict[str, str]:
    """file name -> the schema text it must hold."""
    return {
        f"{cls.SCHEMA.replace('/', '-')}.schema.json": json.dumps(json_schema(cls), indent=2, sort_keys=True)
        + "\n"
        for cls in (Result, Report)
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in published().items():
        (OUT / name).write_text(text)
        print(OUT / name)


if __name__ == "__main__":
    main()
