"""What every benchmark does last: write its result as JSON (creating the folder) and say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(out: str | Path, result: Any, **dumps: Any) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, **dumps))
    print(f"\nwrote {p}")
    return p
