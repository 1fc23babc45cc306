"""Copy a wheel without the files under the given folders, its RECORD rewritten to match (scripts/gpu_wheels.sh).

    python scripts/slim_wheel.py IN.whl OUT.whl PREFIX/ [PREFIX/ ...]
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile


def slim(src: str, dst: str, drop: tuple[str, ...]) -> int:
    """Write ``dst``: ``src`` less every member under ``drop``; returns how many members were left out."""
    n = 0
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zo:
        for info in zi.infolist():
            if info.filename.startswith(drop):
                n += 1
                continue
            data = zi.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and not r[0].startswith(drop)]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                data = buf.getvalue().encode()
            zo.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return n


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(f"usage: {(__doc__ or '').strip()}")
        sys.exit(0)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    left_out = slim(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]))
    print(f"{sys.argv[2]}: {left_out} files left out")
