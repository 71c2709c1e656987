#!/usr/bin/env python3
"""ARCHITECTURE.md's module table against the files: every Rust file under src/ (and the C
library's capi/src/lib.rs) has a row, and every row names a file that exists. Run by CI."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
rows = set(re.findall(r"^\| `((?:src|capi)/[^`]+\.rs)` \|", (root / "ARCHITECTURE.md").read_text(), re.M))
files = {str(p.relative_to(root)) for p in (root / "src").rglob("*.rs")} | {"capi/src/lib.rs"}
missing, stale = sorted(files - rows), sorted(rows - files)
for path in missing:
    print(f"ARCHITECTURE.md: no row for {path}")
for path in stale:
    print(f"ARCHITECTURE.md: a row for {path}, which does not exist")
sys.exit(1 if missing or stale else 0)
