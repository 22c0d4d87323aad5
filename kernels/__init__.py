"""Triton kernels of fastgen (installed as ``fastgen.kernels``).

Each module holds ``@triton.jit`` kernels and plain launchers ``<op>_triton(...)``. On a machine
without a GPU the launchers run on CPU tensors when ``TRITON_INTERPRET=1`` is set before triton
is imported (the tests do this).
"""
