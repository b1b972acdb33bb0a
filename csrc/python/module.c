/* The extension module specstream._core: wires the binding files together. */
#include "binding.h"
#ifdef SS_WITH_CUDA
#include "kernels/cuda/cuda_api.h"
#endif

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#include <numpy/arrayobject.h>
#include <string.h>

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

/* ------------------------------------------------------------ Ctrl-C */

/* The core polls an int; a signal handler may only write a volatile
 * sig_atomic_t, which is int on the platforms specstream builds on. */
_Static_assert(_Generic((sig_atomic_t)0, int: 1, default: 0), "sig_atomic_t must be int");
static volatile sig_atomic_t sigint_seen;
static int sigint_armed;                /* with the GIL: no nesting, no second arming */
static unsigned long main_thread_ident; /* Python runs signal handlers only there */
static PyObject *getsignal, *default_int_handler;

static void on_sigint(int sig) {
    (void)sig;
    sigint_seen = 1;
}

int ss_sigint_arm(ss_sigint_guard *g, const volatile int **cancel) {
    g->armed = 0;
    *cancel = NULL;
    if (PyErr_CheckSignals() < 0) return -1;
    if (sigint_armed || PyThread_get_thread_ident() != main_thread_ident) return 0;
    PyObject *handler = PyObject_CallFunction(getsignal, "i", SIGINT);
    if (!handler) return -1;
    const int default_handler = handler == default_int_handler;
    Py_DECREF(handler);
    if (!default_handler) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK; /* as Python installs its own */
    sigint_seen = 0;
    if (sigaction(SIGINT, &sa, &g->saved) != 0) return 0; /* then the call is just not interruptible */
    g->armed = sigint_armed = 1;
    *cancel = (const volatile int *)&sigint_seen;
    return 0;
}

int ss_sigint_disarm(ss_sigint_guard *g) {
    if (!g->armed) return 0;
    sigaction(SIGINT, &g->saved, NULL);
    g->armed = sigint_armed = 0;
    return sigint_seen != 0;
}

int ss_sigint_end(ss_sigint_guard *g, ss_status st) {
    if (!ss_sigint_disarm(g)) return 0;
    PyErr_SetInterrupt();
    return st == SS_ERR_CANCELLED ? PyErr_CheckSignals() : 0;
}

static int sigint_init(void) {
    PyObject *signal = PyImport_ImportModule("signal"), *threading = PyImport_ImportModule("threading");
    PyObject *main = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main ? PyObject_GetAttrString(main, "ident") : NULL;
    if (signal && ident) {
        main_thread_ident = PyLong_AsUnsignedLong(ident);
        getsignal = PyObject_GetAttrString(signal, "getsignal");
        default_int_handler = getsignal ? PyObject_GetAttrString(signal, "default_int_handler") : NULL;
    }
    Py_XDECREF(signal);
    Py_XDECREF(threading);
    Py_XDECREF(main);
    Py_XDECREF(ident);
    return getsignal && default_int_handler && !PyErr_Occurred() ? 0 : -1;
}

/* ------------------------------------------------------------ functions */

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
    if (sigint_init() < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (ss_py_add_config(m) < 0 || ss_py_add_model(m) < 0 || ss_py_add_tokenizer(m) < 0 || ss_py_add_kernels(m) < 0 ||
        ss_py_add_mapped(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
