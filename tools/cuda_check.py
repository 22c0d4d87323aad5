"""Check a CUDA build of fastgen._C without a GPU: the ptxas register/spill report, then load the
library and confirm that every CUDA kernel it contains is registered with the dispatcher.

    python tools/cuda_check.py --log build/cuda-build.log --lib build/cuda-lib
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
USED = re.compile(r"Used (?P<regs>\d+) registers")
FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")


def demangle(names: list[str]) -> list[str]:
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def ptxas_report(log: str) -> list[dict]:
    """One row per (kernel, arch): registers, stack frame and spill bytes."""
    rows: list[dict] = []
    for line in log.splitlines():
        if m := ENTRY.search(line):
            rows.append({"name": m["name"], "arch": m["arch"], "regs": None, "stack": 0, "spills": 0})
        elif rows and (m := FRAME.search(line)):
            rows[-1]["stack"] = int(m["stack"])
            rows[-1]["spills"] = int(m["stores"]) + int(m["loads"])
        elif rows and (m := USED.search(line)):
            rows[-1]["regs"] = int(m["regs"])
    for row, pretty in zip(rows, demangle([r["name"] for r in rows])):
        row["name"] = re.sub(r"\(.*", "", pretty.replace("(anonymous namespace)::", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="build log containing the `-Xptxas -v` output")
    parser.add_argument("--lib", required=True, help="--build-lib folder holding fastgen/_C*.so")
    args = parser.parse_args()

    rows = ptxas_report(open(args.log).read())
    if not rows:
        print("no ptxas report found in the build log: were CUDA sources compiled?", file=sys.stderr)
        return 1
    print(f"{'kernel':<72} {'arch':<6} {'regs':>4} {'stack':>6} {'spill':>6}")
    for r in rows:
        print(f"{r['name'][:72]:<72} {r['arch']:<6} {r['regs']!s:>4} {r['stack']:>6} {r['spills']:>6}")
    spilled = [r for r in rows if r["spills"]]
    print(f"{len(rows)} kernel builds, {len(spilled)} with register spills")

    (library,) = glob.glob(os.path.join(args.lib, "fastgen", "_C*.so"))
    os.environ["FASTGEN_EXT_PATH"] = os.path.abspath(library)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch

    import fastgen
    from fastgen.ops import implementations

    fastgen.info()
    cuda_ops = [op for op, served in implementations().items() if served["CUDA"].startswith("CUDA C++")]
    expected = sorted({m.group(1) for src in glob.glob("csrc/cuda/*.cu")
                       for m in re.finditer(r'm\.impl\("(\w+)"', open(src).read())})
    missing = sorted(set(expected) - set(cuda_ops))
    if missing:
        print(f"CUDA kernels not registered after loading {library}: {missing}", file=sys.stderr)
        return 1
    print(f"loaded {library} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
          f"CUDA C++ kernels registered: {', '.join(cuda_ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
