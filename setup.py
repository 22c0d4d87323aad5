"""Builds fastgen._C: C++ CPU kernels always, CUDA kernels when torch has CUDA and nvcc exists.

Environment:
  FASTGEN_NO_EXT=1      skip compiling; fastgen then runs on its reference implementations.
  FASTGEN_CUDA=0|1      force the CUDA part off or on (default: on when torch.version.cuda and nvcc exist).
  TORCH_CUDA_ARCH_LIST  CUDA architectures (default here: "8.0;9.0").
  MAX_JOBS              parallel compile jobs (ninja).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def _cuda_wanted(torch) -> bool:
    forced = os.environ.get("FASTGEN_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and shutil.which("nvcc") is not None


def _extensions():
    if os.environ.get("FASTGEN_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # No -std flag: torch.utils.cpp_extension picks the standard the installed torch needs.
    # -fno-trapping-math: without it GCC will not turn the selects in csrc/cpu/fast_math.h into
    # vector blends (a select feeding arithmetic counts as control flow), and every loop calling
    # exp_fast & co. stays scalar. No kernel relies on floating-point exceptions.
    # -fno-math-errno: likewise for std::sqrt, which would otherwise branch to set errno.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
    sources = sorted(glob.glob("csrc/cpu/*.cpp"))
    if _cuda_wanted(torch):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        # pip's CUDA build of torch ships the CUDA headers (cusparse.h, ...) inside site-packages.
        site_packages = os.path.dirname(os.path.dirname(torch.__file__))
        include_dirs = glob.glob(os.path.join(site_packages, "nvidia", "cu*", "include"))
        ext = CUDAExtension(
            "fastgen._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            include_dirs=include_dirs,
            extra_compile_args={
                "cxx": cxx_flags + ["-DFASTGEN_WITH_CUDA"],
                "nvcc": ["-O3", "-DFASTGEN_WITH_CUDA", "-Xptxas", "-v"],
            },
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("fastgen._C", sources, extra_compile_args=cxx_flags, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["fastgen", "fastgen.*"]) + ["fastgen.kernels"],
    package_dir={"fastgen.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
