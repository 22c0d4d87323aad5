// Makes fastgen._C importable as a Python module. The module has no Python functions: importing
// it runs the TORCH_LIBRARY_IMPL registrations of the kernels linked into it.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
