/* Direct access to the CPU kernels, for tests and benchmarks: matrix
 * products in every weight dtype, int8 quantization, the FLOP-rate probe and
 * the dispatch decisions. Not part of the public Python API. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <string.h>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"
#include "spec/sampling.h"
#include "spec/verify.h"

static int kernel_dtype(const char *name, ss_dtype *out) {
    if (!strcmp(name, "f32")) *out = SS_F32;
    else if (!strcmp(name, "f16")) *out = SS_F16;
    else if (!strcmp(name, "bf16")) *out = SS_BF16;
    else if (!strcmp(name, "i8")) *out = SS_I8;
    else {
        PyErr_Format(PyExc_ValueError, "unknown weight dtype '%s' (expected f32, f16, bf16 or i8)", name);
        return -1;
    }
    return 0;
}

/* A level name (None: the level in use) -> level, which this CPU must have. */
static int kernel_level(const char *name, int *out) {
    if (!name) {
        *out = ss_simd_level();
        return 0;
    }
    for (int level = 0; ss_level_name(level); level++) {
        if (strcmp(name, ss_level_name(level)) != 0) continue;
        if (level > ss_cpu_level()) {
            PyErr_Format(PyExc_ValueError, "this CPU cannot run the '%s' kernels (its best level is '%s')", name,
                         ss_level_name(ss_cpu_level()));
            return -1;
        }
        *out = level;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unknown kernel level '%s'", name);
    return -1;
}

/* matmul(x [n,k] f32, w (any contiguous array of the stored bytes), wtype, m,
 *        bias=None, epilogue=0, out=None, level=None) -> out [n,m] f32 */
static PyObject *py_matmul(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"x", "w", "wtype", "m", "bias", "epilogue", "out", "level", NULL};
    PyObject *x_obj, *w_obj, *bias_obj = Py_None, *out_obj = Py_None;
    const char *wname, *level_name = NULL;
    int m, epi = 0, level;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOsi|OiOz", kwlist, &x_obj, &w_obj, &wname, &m, &bias_obj, &epi,
                                     &out_obj, &level_name))
        return NULL;
    ss_dtype wt;
    if (kernel_dtype(wname, &wt) < 0 || kernel_level(level_name, &level) < 0) return NULL;
    if (epi < SS_EPI_NONE || epi > SS_EPI_ADD) return PyErr_Format(PyExc_ValueError, "bad epilogue %d", epi);
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(x_obj, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!x) return NULL;
    PyArrayObject *w = NULL, *bias = NULL, *out = NULL;
    PyObject *result = NULL;
    const int n = (int)PyArray_DIM(x, 0), k = (int)PyArray_DIM(x, 1);
    if (!PyArray_Check(w_obj) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)w_obj)) {
        PyErr_SetString(PyExc_TypeError, "w must be a C-contiguous numpy array");
        goto done;
    }
    w = (PyArrayObject *)w_obj;
    Py_INCREF(w);
    if (n < 1 || k < 1 || m < 1) {
        PyErr_SetString(PyExc_ValueError, "matmul needs n, k, m >= 1");
        goto done;
    }
    if ((size_t)PyArray_NBYTES(w) != ss_matrix_bytes(wt, m, k)) {
        PyErr_Format(PyExc_ValueError, "w has %zd bytes, a [%d, %d] %s matrix has %zu", (Py_ssize_t)PyArray_NBYTES(w),
                     m, k, wname, ss_matrix_bytes(wt, m, k));
        goto done;
    }
    if (bias_obj != Py_None) {
        bias = (PyArrayObject *)PyArray_FROMANY(bias_obj, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY);
        if (!bias) goto done;
        if (PyArray_DIM(bias, 0) != m) {
            PyErr_SetString(PyExc_ValueError, "bias must have m values");
            goto done;
        }
    }
    if (out_obj != Py_None) {
        if (!PyArray_Check(out_obj) || PyArray_TYPE((PyArrayObject *)out_obj) != NPY_FLOAT32 ||
            !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)out_obj) || PyArray_NDIM((PyArrayObject *)out_obj) != 2 ||
            PyArray_DIM((PyArrayObject *)out_obj, 0) != n || PyArray_DIM((PyArrayObject *)out_obj, 1) != m ||
            !PyArray_ISWRITEABLE((PyArrayObject *)out_obj)) {
            PyErr_SetString(PyExc_ValueError, "out must be a writeable C-contiguous float32 [n, m] array");
            goto done;
        }
        out = (PyArrayObject *)out_obj;
        Py_INCREF(out);
    } else {
        npy_intp dims[2] = {n, m};
        out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
        if (!out) goto done;
    }
    {
        float *o = PyArray_DATA(out);
        const float *xp = PyArray_DATA(x), *bp = bias ? PyArray_DATA(bias) : NULL;
        const void *wp = PyArray_DATA(w);
        Py_BEGIN_ALLOW_THREADS
        ss_matmul_at(level, o, xp, n, k, wp, wt, m, bp, (ss_epilogue)epi);
        Py_END_ALLOW_THREADS
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(bias);
    Py_XDECREF(out);
    return result;
}

/* quantize_i8(w [m,k] f32) -> uint8 array holding the SS_I8 layout */
static PyObject *py_quantize_i8(PyObject *self, PyObject *arg) {
    (void)self;
    PyArrayObject *w = (PyArrayObject *)PyArray_FROMANY(arg, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!w) return NULL;
    const int64_t rows = PyArray_DIM(w, 0), cols = PyArray_DIM(w, 1);
    npy_intp dims[1] = {(npy_intp)ss_matrix_bytes(SS_I8, rows, cols)};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_UINT8, 0);
    if (!out) {
        Py_DECREF(w);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_quantize_i8(PyArray_DATA(out), PyArray_DATA(w), SS_F32, rows, cols);
    Py_END_ALLOW_THREADS
    Py_DECREF(w);
    if (rc != 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return (PyObject *)out;
}

/* i8_scale_offset(m, k) -> byte offset of the scales in the SS_I8 layout */
static PyObject *py_i8_scale_offset(PyObject *self, PyObject *args) {
    (void)self;
    long long m, k;
    if (!PyArg_ParseTuple(args, "LL", &m, &k)) return NULL;
    return PyLong_FromSize_t(ss_matrix_bytes(SS_I8, m, k) - (size_t)m * sizeof(float));
}

static PyObject *py_peak_gflops(PyObject *self, PyObject *args) {
    (void)self;
    double seconds;
    int repeats;
    if (!PyArg_ParseTuple(args, "di", &seconds, &repeats)) return NULL;
    if (!(seconds > 0.0) || seconds > 600.0 || repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "peak_gflops needs 0 < seconds <= 600 and repeats >= 1");
        return NULL;
    }
    double g;
    Py_BEGIN_ALLOW_THREADS
    g = ss_peak_gflops(seconds, repeats);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(g);
}

static PyObject *py_matmul_path(PyObject *self, PyObject *args) {
    (void)self;
    const char *name, *level_name = NULL;
    int n, level;
    if (!PyArg_ParseTuple(args, "si|z", &name, &n, &level_name)) return NULL;
    ss_dtype wt;
    if (kernel_dtype(name, &wt) < 0 || kernel_level(level_name, &level) < 0) return NULL;
    return PyUnicode_FromString(ss_matmul_path_at(level, wt, n));
}

/* Names of the levels this CPU can run, lowest first. */
static PyObject *py_simd_levels(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    PyObject *out = PyList_New(0);
    for (int level = 0; out && level <= ss_cpu_level(); level++) {
        PyObject *name = PyUnicode_FromString(ss_level_name(level));
        if (!name || PyList_Append(out, name) < 0) Py_CLEAR(out);
        Py_XDECREF(name);
    }
    return out;
}

static PyObject *py_simd_level(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyLong_FromLong(ss_simd_level());
}

/* verify_siblings(p, q, m, samples, seed) -> int32[samples]: the token the
 * multi-candidate rule emits at one node, per trial: m candidates drawn
 * without replacement from q (q None: the m most probable tokens of p, as
 * deterministic proposals), then verified against p. Each emitted token
 * must be distributed as p. */
static PyObject *py_verify_siblings(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *p_obj, *q_obj;
    int m, samples;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOiiK", &p_obj, &q_obj, &m, &samples, &seed)) return NULL;
    PyArrayObject *p = (PyArrayObject *)PyArray_FROMANY(p_obj, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY);
    PyArrayObject *q = p && q_obj != Py_None ? (PyArrayObject *)PyArray_FROMANY(q_obj, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY)
                                             : NULL;
    if (!p || (q_obj != Py_None && !q)) {
        Py_XDECREF(p);
        return NULL;
    }
    const int n = (int)PyArray_DIM(p, 0);
    if ((q && PyArray_DIM(q, 0) != n) || m < 1 || m > 16 || m > n || samples < 1) {
        Py_DECREF(p);
        Py_XDECREF(q);
        PyErr_SetString(PyExc_ValueError, "verify_siblings needs len(q) == len(p), 1 <= m <= min(16, len(p)), samples >= 1");
        return NULL;
    }
    npy_intp dims[1] = {samples};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
    float *work = PyMem_Malloc(3 * (size_t)n * sizeof(float));
    if (!out || !work) {
        Py_DECREF(p);
        Py_XDECREF(q);
        Py_XDECREF(out);
        PyMem_Free(work);
        return PyErr_NoMemory();
    }
    float *residual = work, *q_work = work + n, *draw = work + 2 * n;
    const float *pp = PyArray_DATA(p), *qq = q ? PyArray_DATA(q) : NULL;
    int32_t *o = PyArray_DATA(out), cand[16];
    ss_rng rng;
    ss_rng_seed(&rng, seed);
    Py_BEGIN_ALLOW_THREADS
    for (int s = 0; s < samples; s++) {
        const int c = qq ? ss_sample_distinct(qq, n, m, &rng, draw, cand) : ss_top_indices(pp, n, m, cand);
        memcpy(residual, pp, (size_t)n * sizeof(float));
        int32_t next = -1;
        const int accepted = ss_verify_siblings(residual, qq, q_work, cand, c, n, &rng, &next);
        o[s] = accepted >= 0 ? cand[accepted] : next;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(work);
    Py_DECREF(p);
    Py_XDECREF(q);
    return (PyObject *)out;
}

static PyMethodDef kernel_methods[] = {
    {"matmul", (PyCFunction)(void (*)(void))py_matmul, METH_VARARGS | METH_KEYWORDS,
     "matmul(x, w, wtype, m, bias=None, epilogue=0, out=None, level=None) -> x @ w.T (+ bias, epilogue)"},
    {"quantize_i8", py_quantize_i8, METH_O, "quantize_i8(w f32 [m,k]) -> uint8 array in the SS_I8 layout"},
    {"i8_scale_offset", py_i8_scale_offset, METH_VARARGS, "i8_scale_offset(m, k) -> byte offset of the scales"},
    {"peak_gflops", py_peak_gflops, METH_VARARGS, "peak_gflops(seconds, repeats) -> f32 FMA GFLOP/s (best run)"},
    {"matmul_path", py_matmul_path, METH_VARARGS,
     "matmul_path(wtype, n, level=None) -> kernels used for that batch size"},
    {"simd_levels", py_simd_levels, METH_NOARGS, "names of the kernel levels this CPU can run, lowest first"},
    {"verify_siblings", py_verify_siblings, METH_VARARGS,
     "verify_siblings(p, q, m, samples, seed) -> emitted tokens of the multi-candidate rule, per trial"},
    {"simd_level", py_simd_level, METH_NOARGS, "0 scalar, 1 avx2, 2 avx512bf16 (after SPECSTREAM_KERNELS)"},
    {NULL, NULL, 0, NULL},
};

int ss_py_add_kernels(PyObject *module) { return PyModule_AddFunctions(module, kernel_methods); }
