/* The extension module specstream._core: wires the binding files together. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#include <numpy/arrayobject.h>

PyObject *ss_py_raise(ss_status status, const ss_error *err) {
    const char *msg = err && err->message[0] ? err->message : "specstream error";
    PyObject *type = PyExc_ValueError;
    switch (status) {
    case SS_ERR_NO_MEMORY: type = PyExc_MemoryError; break;
    case SS_ERR_UNSUPPORTED: type = PyExc_NotImplementedError; break;
    case SS_ERR_CANCELLED: type = PyExc_KeyboardInterrupt; break;
    case SS_ERR_OUT_OF_RANGE: type = PyExc_IndexError; break;
    default: break;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

static PyObject *cpu_kernels(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyUnicode_FromString(ss_cpu_kernels());
}

static PyObject *set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 1024) {
        PyErr_Format(PyExc_ValueError, "num_threads must be in [1, 1024], got %ld", n);
        return NULL;
    }
    ss_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *get_num_threads(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyLong_FromLong(ss_get_num_threads());
}

static PyMethodDef module_methods[] = {
    {"cpu_kernels", cpu_kernels, METH_NOARGS, "SIMD kernels picked at run time."},
    {"set_num_threads", set_num_threads, METH_O, "Set the number of OpenMP threads."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "Number of OpenMP threads in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "specstream._core", "C core of specstream.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (ss_py_add_model(m) < 0 || ss_py_add_tokenizer(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
