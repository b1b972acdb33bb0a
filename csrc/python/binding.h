/* Internal declarations shared by the CPython binding files (csrc/python/).
 * The binding converts Python objects to C arguments and ss_status into
 * exceptions; it holds no logic of its own. */
#ifndef SS_BINDING_H
#define SS_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "specstream.h"

/* Raises the Python exception that matches status, with err's message. */
PyObject *ss_py_raise(ss_status status, const ss_error *err);

/* Each binding file adds its types/functions to the module. */
int ss_py_add_model(PyObject *module);
int ss_py_add_tokenizer(PyObject *module);
int ss_py_add_kernels(PyObject *module); /* py_kernels.c: kernel access for tests */

#endif
