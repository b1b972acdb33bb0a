/* The extension module specstream._core: wires the binding files together. */
#include "binding.h"
#include "kernels/cpu/kernels.h"
#ifdef SS_WITH_CUDA
#include "kernels/cuda/cuda_api.h"
#endif

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

static PyObject *read_bandwidth(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t bytes;
    int repeats;
    if (!PyArg_ParseTuple(args, "ni", &bytes, &repeats)) return NULL;
    if (bytes < (1 << 20) || repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "read_bandwidth needs bytes >= 1 MiB and repeats >= 1");
        return NULL;
    }
    double gbs, checksum = 0.0;
    Py_BEGIN_ALLOW_THREADS
    gbs = ss_read_bandwidth((size_t)bytes, repeats, &checksum);
    Py_END_ALLOW_THREADS
    if (gbs <= 0.0) return PyErr_NoMemory();
    return PyFloat_FromDouble(gbs);
}

static PyObject *cuda_available(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyLong_FromLong(ss_cuda_available());
}

/* {"cuda": bool, ...}: what this build was compiled with (no GPU needed). */
static PyObject *build_info(PyObject *self, PyObject *args) {
    (void)self; (void)args;
#ifdef SS_WITH_CUDA
    const int rt = ss_cuda_compiled_runtime_version(), loaded = ss_cuda_loaded_runtime_version();
    return Py_BuildValue("{s:O,s:s,s:i,s:i,s:i,s:s}", "cuda", Py_True, "cpu_kernels", ss_cpu_kernels(),
                         "cuda_runtime", rt, "cuda_runtime_loaded", loaded, "cublas", ss_cuda_compiled_cublas_version(),
                         "cuda_archs", ss_cuda_archs());
#else
    return Py_BuildValue("{s:O,s:s}", "cuda", Py_False, "cpu_kernels", ss_cpu_kernels());
#endif
}

static PyObject *cuda_device_name(PyObject *self, PyObject *args) {
    (void)self;
    int device = 0;
    if (!PyArg_ParseTuple(args, "|i", &device)) return NULL;
#ifdef SS_WITH_CUDA
    char name[256];
    ss_error err = {{0}};
    ss_status st = ss_cuda_device_name(device, name, sizeof name, &err);
    if (st != SS_OK) return ss_py_raise(st, &err);
    return PyUnicode_FromString(name);
#else
    PyErr_SetString(PyExc_RuntimeError, "this build of specstream has no CUDA backend");
    return NULL;
#endif
}

static PyObject *cuda_copy_bandwidth(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t bytes;
    int repeats;
    if (!PyArg_ParseTuple(args, "ni", &bytes, &repeats)) return NULL;
    if (bytes < (1 << 20) || repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "cuda_copy_bandwidth needs bytes >= 1 MiB and repeats >= 1");
        return NULL;
    }
#ifdef SS_WITH_CUDA
    double gbs = 0.0;
    ss_error err = {{0}};
    ss_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ss_cuda_copy_bandwidth((size_t)bytes, repeats, &gbs, &err);
    Py_END_ALLOW_THREADS
    if (st != SS_OK) return ss_py_raise(st, &err);
    return PyFloat_FromDouble(gbs);
#else
    PyErr_SetString(PyExc_RuntimeError, "this build of specstream has no CUDA backend");
    return NULL;
#endif
}

static PyMethodDef module_methods[] = {
    {"read_bandwidth", read_bandwidth, METH_VARARGS, "read_bandwidth(bytes, repeats) -> GB/s (best run)"},
    {"cpu_kernels", cpu_kernels, METH_NOARGS, "SIMD kernels picked at run time."},
    {"set_num_threads", set_num_threads, METH_O, "Set the number of OpenMP threads."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "Number of OpenMP threads in use."},
    {"cuda_available", cuda_available, METH_NOARGS, "Number of usable CUDA GPUs (0 without a GPU or a CUDA build)."},
    {"build_info", build_info, METH_NOARGS, "What this build was compiled with: {'cuda': bool, ...}."},
    {"cuda_device_name", cuda_device_name, METH_VARARGS, "cuda_device_name(device=0) -> GPU name"},
    {"cuda_copy_bandwidth", cuda_copy_bandwidth, METH_VARARGS,
     "cuda_copy_bandwidth(bytes, repeats) -> GB/s of a device-to-device copy (read + write), best run"},
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
    if (ss_py_add_model(m) < 0 || ss_py_add_tokenizer(m) < 0 || ss_py_add_kernels(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
