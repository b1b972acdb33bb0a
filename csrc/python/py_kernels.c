/* Direct access to the CPU kernels, for tests and benchmarks: the weight
 * formats, matrix products in every format and at every level, packing
 * (quantization) and dequantization, the FLOP-rate probe and the dispatch
 * decisions. Not part of the public Python API. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <string.h>

#include "kernels/cpu/formats.h"
#include "kernels/cpu/simd.h"
#include "spec/sampling.h"
#include "spec/verify.h"

int ss_py_format(const char *name, ss_dtype *out) {
    const ss_format *f = ss_format_named(name);
    if (f) {
        *out = f->dtype;
        return 0;
    }
    int count;
    const ss_format *all = ss_formats(&count);
    PyObject *names = PyUnicode_FromString("");
    for (int i = 0; names && i < count; i++) {
        PyObject *joined = PyUnicode_FromFormat("%U%s%s", names, i ? ", " : "", all[i].name);
        Py_SETREF(names, joined);
    }
    if (names) PyErr_Format(PyExc_ValueError, "unknown weight format '%s' (expected one of %U)", name, names);
    Py_XDECREF(names);
    return -1;
}

/* A level name -> level, which this CPU must have; None -> -1 (the
 * dispatcher's choice at the level in use). */
static int kernel_level(const char *name, int *out) {
    if (!name) {
        *out = -1;
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
 *        bias=None, epilogue=0, out=None, level=None, parts=0) -> out [n,m] f32
 * parts > 0: ss_matmul_part for each part in turn, from this thread. */
static PyObject *py_matmul(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"x", "w", "wtype", "m", "bias", "epilogue", "out", "level", "parts", NULL};
    PyObject *x_obj, *w_obj, *bias_obj = Py_None, *out_obj = Py_None;
    const char *wname, *level_name = NULL;
    int m, epi = 0, level, parts = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOsi|OiOzi", kwlist, &x_obj, &w_obj, &wname, &m, &bias_obj, &epi,
                                     &out_obj, &level_name, &parts))
        return NULL;
    if (parts < 0 || parts > 1024) return PyErr_Format(PyExc_ValueError, "parts must be in [0, 1024], got %d", parts);
    ss_dtype wt;
    if (ss_py_format(wname, &wt) < 0 || kernel_level(level_name, &level) < 0) return NULL;
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
    if ((size_t)PyArray_NBYTES(w) != ss_format_of(wt)->bytes(m, k)) {
        PyErr_Format(PyExc_ValueError, "w has %zd bytes, a [%d, %d] %s matrix has %zu", (Py_ssize_t)PyArray_NBYTES(w),
                     m, k, wname, ss_format_of(wt)->bytes(m, k));
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
        const ss_epilogue e = (ss_epilogue)epi;
        if (parts == 0 && level < 0) ss_matmul_ex(o, xp, n, k, wp, wt, m, bp, e);
        else if (parts == 0) ss_matmul_at(level, o, xp, n, k, wp, wt, m, bp, e);
        for (int part = 0; part < parts; part++) {
            if (level < 0) ss_matmul_part(part, parts, o, xp, n, k, wp, wt, m, bp, e);
            else ss_matmul_part_at(level, part, parts, o, xp, n, k, wp, wt, m, bp, e);
        }
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

/* pack(w [m,k] f32, format) -> uint8 array holding the matrix stored in
 * that format, as ss_model_create stores it */
static PyObject *py_pack(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *w_obj;
    const char *name;
    ss_dtype dt;
    if (!PyArg_ParseTuple(args, "Os", &w_obj, &name) || ss_py_format(name, &dt) < 0) return NULL;
    PyArrayObject *w = (PyArrayObject *)PyArray_FROMANY(w_obj, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!w) return NULL;
    const ss_format *f = ss_format_of(dt);
    const int64_t rows = PyArray_DIM(w, 0), cols = PyArray_DIM(w, 1);
    npy_intp dims[1] = {(npy_intp)f->bytes(rows, cols)};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_UINT8, 0);
    if (!out) {
        Py_DECREF(w);
        return NULL;
    }
    int rc = 0;
    if (rows > 0 && cols > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = f->pack(PyArray_DATA(out), PyArray_DATA(w), SS_F32, rows, cols);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(w);
    if (rc != 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return (PyObject *)out;
}

/* dequantize(packed uint8, format, m, k) -> [m,k] f32: the values the
 * stored matrix stands for (the format's scalar dequantization) */
static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *w_obj;
    const char *name;
    int m, k;
    ss_dtype dt;
    if (!PyArg_ParseTuple(args, "Osii", &w_obj, &name, &m, &k) || ss_py_format(name, &dt) < 0) return NULL;
    const ss_format *f = ss_format_of(dt);
    if (!PyArray_Check(w_obj) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)w_obj) || m < 1 || k < 1 ||
        (size_t)PyArray_NBYTES((PyArrayObject *)w_obj) != f->bytes(m, k)) {
        PyErr_Format(PyExc_ValueError, "w must be a C-contiguous array of the %zu bytes of a [%d, %d] %s matrix",
                     m > 0 && k > 0 ? f->bytes(m, k) : 0, m, k, f->name);
        return NULL;
    }
    npy_intp dims[2] = {m, k};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
    if (!out) return NULL;
    for (int r = 0; r < m; r++)
        f->dequantize((float *)PyArray_DATA(out) + (size_t)r * k, PyArray_DATA((PyArrayObject *)w_obj), m, k, r, 0, k);
    return (PyObject *)out;
}

/* The layout offsets of a quantized [m, k] matrix: {"int8": scales} or
 * {"int4": scales, zeros, row_bytes, groups} (for tests that unpack it). */
static PyObject *py_layout(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    long long m, k;
    ss_dtype dt;
    if (!PyArg_ParseTuple(args, "sLL", &name, &m, &k) || ss_py_format(name, &dt) < 0) return NULL;
    const ss_format *f = ss_format_of(dt);
    if (m < 1 || k < 1) return PyErr_Format(PyExc_ValueError, "layout needs m, k >= 1");
    if (dt == SS_I8)
        return Py_BuildValue("{s:n,s:n}", "bytes", (Py_ssize_t)f->bytes(m, k), "scales",
                             (Py_ssize_t)ss_i8_scales_offset(m, k));
    if (dt == SS_I4)
        return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:i}", "bytes", (Py_ssize_t)f->bytes(m, k), "scales",
                             (Py_ssize_t)ss_i4_scales_offset(m, k), "zeros", (Py_ssize_t)ss_i4_zeros_offset(m, k),
                             "row_bytes",
                             (Py_ssize_t)ss_i4_row_bytes(k), "groups", (Py_ssize_t)ss_i4_groups(k), "group",
                             SS_I4_GROUP);
    return Py_BuildValue("{s:n}", "bytes", (Py_ssize_t)f->bytes(m, k));
}

/* A preference order as level names, best first. */
static PyObject *level_order(const signed char *order) {
    PyObject *out = PyList_New(0);
    for (int i = 0; out && i < SS_SIMD_LEVELS; i++) {
        PyObject *name = PyUnicode_FromString(ss_level_name(order[i]));
        if (!name || PyList_Append(out, name) < 0) Py_CLEAR(out);
        Py_XDECREF(name);
        if (order[i] == SS_SIMD_SCALAR) break;
    }
    return out;
}

/* [{name, aliases, bits, group, scales, checkpoint, cuda, wide_order,
 *   gemm_order}] by dtype */
static PyObject *py_weight_formats(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    static const char *const scale_names[] = {"none", "row", "group"};
    int count;
    const ss_format *all = ss_formats(&count);
    PyObject *out = PyList_New(count);
    for (int i = 0; out && i < count; i++) {
        const ss_format *f = &all[i];
        PyObject *d = Py_BuildValue("{s:s,s:s,s:i,s:i,s:s,s:O,s:O,s:N,s:N}", "name", f->name, "aliases", f->aliases,
                                    "bits", f->bits, "group", f->group, "scales", scale_names[f->scales], "checkpoint",
                                    f->checkpoint ? Py_True : Py_False, "cuda", f->cuda ? Py_True : Py_False,
                                    "wide_order", level_order(f->wide_order), "gemm_order", level_order(f->gemm_order));
        if (!d) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, d);
    }
    return out;
}

/* peak_gflops(seconds, repeats, level=None): None -> the AVX2 rate (or the
 * portable one when capped to scalar) */
static PyObject *py_peak_gflops(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"seconds", "repeats", "level", NULL};
    double seconds;
    int repeats, level;
    const char *level_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "di|z", kwlist, &seconds, &repeats, &level_name) ||
        kernel_level(level_name, &level) < 0)
        return NULL;
    if (!(seconds > 0.0) || seconds > 600.0 || repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "peak_gflops needs 0 < seconds <= 600 and repeats >= 1");
        return NULL;
    }
    double g;
    Py_BEGIN_ALLOW_THREADS
    g = level < 0 ? ss_peak_gflops(seconds, repeats) : ss_peak_gflops_at(level, seconds, repeats);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(g);
}

/* read_bandwidth(bytes, repeats, level=None) -> GB/s, best run */
static PyObject *py_read_bandwidth(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"bytes", "repeats", "level", NULL};
    Py_ssize_t bytes;
    int repeats, level;
    const char *level_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ni|z", kwlist, &bytes, &repeats, &level_name) ||
        kernel_level(level_name, &level) < 0)
        return NULL;
    if (bytes < (1 << 20) || repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "read_bandwidth needs bytes >= 1 MiB and repeats >= 1");
        return NULL;
    }
    double gbs, checksum = 0.0;
    Py_BEGIN_ALLOW_THREADS
    gbs = level < 0 ? ss_read_bandwidth((size_t)bytes, repeats, &checksum)
                    : ss_read_bandwidth_at(level, (size_t)bytes, repeats, &checksum);
    Py_END_ALLOW_THREADS
    if (gbs <= 0.0) return PyErr_NoMemory();
    return PyFloat_FromDouble(gbs);
}

static PyObject *py_matmul_path(PyObject *self, PyObject *args) {
    (void)self;
    const char *name, *level_name = NULL;
    int n, level;
    if (!PyArg_ParseTuple(args, "si|z", &name, &n, &level_name)) return NULL;
    ss_dtype wt;
    if (ss_py_format(name, &wt) < 0 || kernel_level(level_name, &level) < 0) return NULL;
    return PyUnicode_FromString(level < 0 ? ss_matmul_path(wt, n) : ss_matmul_path_at(level, wt, n));
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
     "matmul(x, w, wtype, m, bias=None, epilogue=0, out=None, level=None, parts=0) -> x @ w.T (+ bias, epilogue)"},
    {"pack", py_pack, METH_VARARGS, "pack(w f32 [m,k], format) -> uint8 array: w stored in that format"},
    {"dequantize", py_dequantize, METH_VARARGS, "dequantize(packed, format, m, k) -> f32 [m,k] it stands for"},
    {"layout", py_layout, METH_VARARGS, "layout(format, m, k) -> byte offsets of a quantized matrix's parts"},
    {"weight_formats", py_weight_formats, METH_NOARGS, "the weight-format table: name, aliases, bits, ..."},
    {"peak_gflops", (PyCFunction)(void (*)(void))py_peak_gflops, METH_VARARGS | METH_KEYWORDS,
     "peak_gflops(seconds, repeats, level=None) -> f32 FMA GFLOP/s (best run; None: 8-lane AVX2)"},
    {"read_bandwidth", (PyCFunction)(void (*)(void))py_read_bandwidth, METH_VARARGS | METH_KEYWORDS,
     "read_bandwidth(bytes, repeats, level=None) -> GB/s (best run; None: the level in use)"},
    {"matmul_path", py_matmul_path, METH_VARARGS,
     "matmul_path(wtype, n, level=None) -> kernels used for that batch size"},
    {"simd_levels", py_simd_levels, METH_NOARGS, "names of the kernel levels this CPU can run, lowest first"},
    {"verify_siblings", py_verify_siblings, METH_VARARGS,
     "verify_siblings(p, q, m, samples, seed) -> emitted tokens of the multi-candidate rule, per trial"},
    {"simd_level", py_simd_level, METH_NOARGS, "0 scalar, 1 avx2, 2 avx512, 3 amx (after SPECSTREAM_KERNELS)"},
    {NULL, NULL, 0, NULL},
};

int ss_py_add_kernels(PyObject *module) { return PyModule_AddFunctions(module, kernel_methods); }
