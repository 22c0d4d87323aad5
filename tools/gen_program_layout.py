"""Writes csrc/common/sample_program_layout.h from fastgen/program.py (the sampling program's
binary layout as C++ constants). Run it after changing the layout: ``python -m tools.gen_program_layout``."""
from pathlib import Path

from fastgen.program import layout_header

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "common" / "sample_program_layout.h"

if __name__ == "__main__":
    HEADER.write_text(layout_header())
    print(f"wrote {HEADER}")
