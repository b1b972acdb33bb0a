/* Python types Model and Generator, and the streaming evaluation call.
 * Arguments arrive already validated and normalised by the Python package
 * (specstream/model.py); this file only converts and releases the GIL. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <string.h>

/* ------------------------------------------------------------ conversions */

/* A cache config for a call over `needed` tokens: a full cache without a
 * capacity holds them all. */
static int parse_cache(PyObject *values, int64_t needed, ss_cache_config *c, PyObject *keep) {
    if (ss_py_config_parse(SS_CONFIG_CACHE, values, c, keep) < 0) return -1;
    if (c->policy == SS_CACHE_FULL && c->capacity == 0) {
        if (needed > SS_MAX_TOKENS) {
            PyErr_Format(PyExc_ValueError,
                         "a full cache for %lld tokens exceeds the limit of %d: use a bounded CacheConfig.policy "
                         "(window/streaming) for streams this long", (long long)needed, SS_MAX_TOKENS);
            return -1;
        }
        c->capacity = needed > 0 ? (int)needed : 1;
    }
    return 0;
}

/* A C-contiguous int32 array of token ids (new reference). */
static PyArrayObject *as_ids(PyObject *obj, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_INT32, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!a) {
        PyErr_Format(PyExc_ValueError, "%s must be a 1-D sequence of int32 token ids", what);
        return NULL;
    }
    return a;
}

/* ------------------------------------------------------------------ Model */

typedef struct {
    PyObject_HEAD
    ss_model *model;
    PyObject *keepalive; /* the weight arrays the model borrows */
} ModelObject;

static void Model_dealloc(ModelObject *self) {
    ss_model_free(self->model);
    Py_XDECREF(self->keepalive);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* tensors[name] -> ss_tensor; the array must be C-contiguous f32/f16 or
 * uint16 (bf16 bits), and is kept alive by the model. */
static int get_tensor(PyObject *tensors, PyObject *keep, const char *name, ss_tensor *out) {
    PyObject *obj = PyDict_GetItemString(tensors, name);
    memset(out, 0, sizeof *out);
    if (!obj) return 0; /* reported by ss_model_create as missing */
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "tensor %s is not a numpy array", name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (!PyArray_IS_C_CONTIGUOUS(a) || PyArray_NDIM(a) < 1 || PyArray_NDIM(a) > 2) {
        PyErr_Format(PyExc_ValueError, "tensor %s must be a C-contiguous 1-D or 2-D array", name);
        return -1;
    }
    switch (PyArray_TYPE(a)) {
    case NPY_FLOAT32: out->dtype = SS_F32; break;
    case NPY_FLOAT16: out->dtype = SS_F16; break;
    case NPY_UINT16: out->dtype = SS_BF16; break;
    default:
        PyErr_Format(PyExc_ValueError, "tensor %s has unsupported numpy dtype (need float32, float16 or bf16 bits as uint16)", name);
        return -1;
    }
    out->data = PyArray_DATA(a);
    out->rows = PyArray_DIM(a, 0);
    out->cols = PyArray_NDIM(a) == 2 ? PyArray_DIM(a, 1) : 1;
    return PyList_Append(keep, obj);
}

/* Model(config: dict, tensors: dict[name, array], dtype) */
static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"config", "tensors", "dtype", NULL};
    if (self->model) { /* generators may borrow it: never replace it under them */
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        return -1;
    }
    PyObject *cfg_values, *tensors;
    const char *dtype_name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!s", kwlist, &PyDict_Type, &cfg_values, &PyDict_Type,
                                     &tensors, &dtype_name))
        return -1;
    ss_model_config c;
    ss_dtype dtype;
    PyObject *keep = PyList_New(0);
    if (!keep || ss_py_config_parse(SS_CONFIG_MODEL, cfg_values, &c, keep) < 0 || ss_py_format(dtype_name, &dtype) < 0) {
        Py_XDECREF(keep);
        return -1;
    }
    ss_layer_weights *layers = PyMem_Calloc((size_t)c.n_layer, sizeof *layers);
    if (!layers) {
        Py_DECREF(keep);
        PyErr_NoMemory();
        return -1;
    }
    ss_weights w = {.layers = layers};
    int n_specs, rc = 0;
    const ss_tensor_spec *specs = ss_tensor_specs(&n_specs);
    char name[160];
    for (int i = 0; i < n_specs && rc == 0; i++) {
        for (int layer = 0; layer < (specs[i].per_layer ? c.n_layer : 1) && rc == 0; layer++) {
            snprintf(name, sizeof name, specs[i].name, layer);
            char *base = specs[i].per_layer ? (char *)&layers[layer] : (char *)&w;
            rc = get_tensor(tensors, keep, name, (ss_tensor *)(base + specs[i].offset));
        }
    }
    if (rc != 0) {
        Py_DECREF(keep);
        PyMem_Free(layers);
        return -1;
    }
    ss_error err = {{0}};
    ss_status st;
    ss_model *model = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = ss_model_create(&c, &w, dtype, &model, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(layers);
    if (st != SS_OK || ss_py_check_mapped() < 0) {
        Py_DECREF(keep);
        if (st != SS_OK) ss_py_raise(st, &err);
        else ss_model_free(model);
        return -1;
    }
    self->model = model;
    Py_XSETREF(self->keepalive, keep);
    return 0;
}

static int check_model(ModelObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "model is not initialised");
        return -1;
    }
    return 0;
}

/* forward(ids, cache: dict, chunk) -> logits [n, vocab_rows] of a fresh sequence */
static PyObject *Model_forward(ModelObject *self, PyObject *args) {
    PyObject *ids_obj, *cache_values;
    int chunk;
    if (check_model(self) < 0 || !PyArg_ParseTuple(args, "OO!i", &ids_obj, &PyDict_Type, &cache_values, &chunk))
        return NULL;
    PyArrayObject *ids = as_ids(ids_obj, "ids");
    if (!ids) return NULL;
    const npy_intp n = PyArray_DIM(ids, 0);
    ss_cache_config cache;
    PyObject *keep = PyList_New(0);
    if (!keep || parse_cache(cache_values, n, &cache, keep) < 0) {
        Py_XDECREF(keep);
        Py_DECREF(ids);
        return NULL;
    }
    const int V = ss_model_get_config(self->model)->vocab_rows;
    npy_intp dims[2] = {n, V};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(ids);
        Py_DECREF(keep);
        return NULL;
    }
    ss_error err = {{0}};
    ss_status st = SS_OK;
    const int32_t *tok = PyArray_DATA(ids);
    float *logits = PyArray_DATA(out);
    if (n < 1) st = SS_ERR_INVALID_ARGUMENT, snprintf(err.message, sizeof err.message, "ids is empty");
    if (chunk < 1) st = SS_ERR_INVALID_ARGUMENT, snprintf(err.message, sizeof err.message, "chunk must be >= 1");
    ss_sigint_guard sigint;
    const volatile int *cancel;
    if (ss_sigint_arm(&sigint, &cancel) < 0) {
        Py_DECREF(out); Py_DECREF(ids); Py_DECREF(keep);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ss_state *state = NULL;
    if (st == SS_OK) st = ss_state_create(self->model, &cache, chunk, &state, &err);
    for (npy_intp i = 0; i < n && st == SS_OK; i += chunk) {
        if (cancel && *cancel) {
            st = SS_ERR_CANCELLED;
            snprintf(err.message, sizeof err.message, "forward cancelled after %lld tokens", (long long)i);
            break;
        }
        const int c = (int)(n - i < chunk ? n - i : chunk);
        st = ss_forward(self->model, state, tok + i, c, logits + (size_t)i * V, c, &err);
        if (st == SS_OK) st = ss_state_commit(state, &err);
    }
    ss_state_free(state);
    Py_END_ALLOW_THREADS
    Py_DECREF(ids);
    Py_DECREF(keep);
    if (ss_sigint_end(&sigint, st) < 0 || ss_py_check_mapped() < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if (st != SS_OK) {
        Py_DECREF(out);
        return ss_py_raise(st, &err);
    }
    return (PyObject *)out;
}

/* forward_tree(prefix, tokens, parents, cache: dict) -> (logits [n, vocab_rows],
 * hidden [n, d_model]): the prefix (committed in chunks), then the n tokens
 * in one forward as a tree (parents: -1 or an earlier index among them). */
static PyObject *Model_forward_tree(ModelObject *self, PyObject *args) {
    PyObject *prefix_obj, *tokens_obj, *parents_obj, *cache_values;
    if (check_model(self) < 0 ||
        !PyArg_ParseTuple(args, "OOOO!", &prefix_obj, &tokens_obj, &parents_obj, &PyDict_Type, &cache_values))
        return NULL;
    PyArrayObject *prefix = as_ids(prefix_obj, "prefix"), *tokens = prefix ? as_ids(tokens_obj, "tokens") : NULL;
    PyArrayObject *parents = tokens ? as_ids(parents_obj, "parents") : NULL;
    PyObject *keep = parents ? PyList_New(0) : NULL, *result = NULL;
    PyArrayObject *logits = NULL, *hidden = NULL;
    ss_cache_config cache;
    if (!keep) goto done;
    const npy_intp np_ = PyArray_DIM(prefix, 0), n = PyArray_DIM(tokens, 0);
    if (n < 1 || PyArray_DIM(parents, 0) != n || n > SS_MAX_TREE_NODES) {
        PyErr_Format(PyExc_ValueError, "tokens and parents must hold the same number (1 to %d) of entries",
                     SS_MAX_TREE_NODES);
        goto done;
    }
    if (parse_cache(cache_values, np_ + n + 1, &cache, keep) < 0) goto done;
    const ss_model_config *c = ss_model_get_config(self->model);
    npy_intp ldims[2] = {n, c->vocab_rows}, hdims[2] = {n, c->d_model};
    logits = (PyArrayObject *)PyArray_SimpleNew(2, ldims, NPY_FLOAT32);
    hidden = (PyArrayObject *)PyArray_SimpleNew(2, hdims, NPY_FLOAT32);
    if (!logits || !hidden) goto done;
    ss_error err = {{0}};
    ss_status st = SS_OK;
    Py_BEGIN_ALLOW_THREADS
    ss_state *state = NULL;
    const int chunk = 64;
    st = ss_state_create(self->model, &cache, (int)(n > chunk ? n : chunk), &state, &err);
    const int32_t *pre = PyArray_DATA(prefix);
    for (npy_intp i = 0; i < np_ && st == SS_OK; i += chunk) {
        st = ss_forward(self->model, state, pre + i, (int)(np_ - i < chunk ? np_ - i : chunk), NULL, 0, &err);
        if (st == SS_OK) st = ss_state_commit(state, &err);
    }
    if (st == SS_OK)
        st = ss_forward_tree(self->model, state, PyArray_DATA(tokens), PyArray_DATA(parents), (int)n,
                             PyArray_DATA(logits), PyArray_DATA(hidden), (int)n, &err);
    ss_state_free(state);
    Py_END_ALLOW_THREADS
    if (ss_py_check_mapped() < 0) goto done;
    if (st != SS_OK) {
        ss_py_raise(st, &err);
        goto done;
    }
    result = Py_BuildValue("(OO)", logits, hidden);
done:
    Py_XDECREF(prefix);
    Py_XDECREF(tokens);
    Py_XDECREF(parents);
    Py_XDECREF(keep);
    Py_XDECREF(logits);
    Py_XDECREF(hidden);
    return result;
}

/* eval_nll(ids, cache, chunk, record_evictions) ->
 *   (nll float32[n-1], visible int32[n], events int64[m, 3], first_s, rest_s, cache_bytes, n_done, interrupted)
 * Interrupted by Ctrl-C, it returns what it computed -- the first n_done
 * tokens -- with interrupted = True, and leaves raising KeyboardInterrupt
 * to the caller, which keeps those results (specstream/eval.py). */
static PyObject *Model_eval_nll(ModelObject *self, PyObject *args) {
    PyObject *ids_obj, *cache_values;
    int chunk, record;
    if (check_model(self) < 0 ||
        !PyArg_ParseTuple(args, "OO!ip", &ids_obj, &PyDict_Type, &cache_values, &chunk, &record))
        return NULL;
    PyArrayObject *ids = as_ids(ids_obj, "ids");
    if (!ids) return NULL;
    ss_cache_config cache;
    PyObject *structural = PyList_New(0); /* arrays the cache config borrows */
    if (!structural || parse_cache(cache_values, PyArray_DIM(ids, 0), &cache, structural) < 0) {
        Py_XDECREF(structural);
        Py_DECREF(ids);
        return NULL;
    }
    const npy_intp n = PyArray_DIM(ids, 0);
    npy_intp nd = n > 1 ? n - 1 : 0, nv = n;
    PyArrayObject *nll = (PyArrayObject *)PyArray_ZEROS(1, &nd, NPY_FLOAT32, 0);
    PyArrayObject *vis = (PyArrayObject *)PyArray_ZEROS(1, &nv, NPY_INT32, 0);
    if (!nll || !vis) {
        Py_XDECREF(nll); Py_XDECREF(vis); Py_DECREF(ids); Py_DECREF(structural);
        return NULL;
    }
    ss_error err = {{0}};
    ss_status st;
    ss_state *state = NULL;
    double first_s = 0, rest_s = 0;
    int64_t done = 0;
    size_t cache_bytes = 0;
    ss_sigint_guard sigint;
    const volatile int *cancel;
    if (ss_sigint_arm(&sigint, &cancel) < 0) {
        Py_DECREF(nll); Py_DECREF(vis); Py_DECREF(ids); Py_DECREF(structural);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = ss_state_create(self->model, &cache, chunk < 1 ? 1 : chunk, &state, &err);
    if (st == SS_OK) {
        ss_state_record_evictions(state, record);
        cache_bytes = ss_state_cache_bytes(state);
        st = ss_eval_nll(self->model, state, PyArray_DATA(ids), n, chunk, PyArray_DATA(nll), PyArray_DATA(vis),
                         &first_s, &rest_s, &done, cancel, &err);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(ids);
    Py_DECREF(structural);
    const int interrupted = st == SS_ERR_CANCELLED;
    /* Not ss_sigint_end: when the evaluation was cut short the caller raises
     * KeyboardInterrupt with the partial results; a SIGINT that came after
     * the last token goes to Python as usual. */
    if (ss_sigint_disarm(&sigint) && !interrupted) PyErr_SetInterrupt();
    if (interrupted) st = SS_OK;
    PyArrayObject *events = NULL;
    if (st == SS_OK) {
        size_t count = 0;
        const ss_eviction *ev = ss_state_evictions(state, &count);
        npy_intp dims[2] = {(npy_intp)count, 3};
        events = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
        if (events) {
            int64_t *e = PyArray_DATA(events);
            for (size_t i = 0; i < count; i++) {
                e[3 * i] = ev[i].step;
                e[3 * i + 1] = ev[i].dropped;
                e[3 * i + 2] = ev[i].kept;
            }
        }
    }
    ss_state_free(state);
    if (st != SS_OK || !events || ss_py_check_mapped() < 0) {
        Py_DECREF(nll); Py_DECREF(vis); Py_XDECREF(events);
        return st != SS_OK ? ss_py_raise(st, &err) : NULL;
    }
    return Py_BuildValue("(NNNddnLO)", nll, vis, events, first_s, rest_s, (Py_ssize_t)cache_bytes, (long long)done,
                         interrupted ? Py_True : Py_False);
}

/* to_device(device): 0 = CPU, 1 = CUDA GPU (uploads the weights). */
static PyObject *Model_to_device(ModelObject *self, PyObject *arg) {
    if (check_model(self) < 0) return NULL;
    const long device = PyLong_AsLong(arg);
    if (device == -1 && PyErr_Occurred()) return NULL;
    if (device < 0 || device > 1) {
        PyErr_Format(PyExc_ValueError, "device must be 0 (CPU) or 1 (CUDA), got %ld", device);
        return NULL;
    }
    ss_error err = {{0}};
    ss_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ss_model_set_device(self->model, (int)device, &err);
    Py_END_ALLOW_THREADS
    if (ss_py_check_mapped() < 0) return NULL;
    if (st != SS_OK) return ss_py_raise(st, &err);
    Py_RETURN_NONE;
}

static PyObject *Model_get_device(ModelObject *self, void *closure) {
    (void)closure;
    if (check_model(self) < 0) return NULL;
    return PyLong_FromLong(ss_model_get_device(self->model));
}

static PyObject *Model_get_weight_bytes(ModelObject *self, void *closure) {
    (void)closure;
    if (check_model(self) < 0) return NULL;
    return PyLong_FromSize_t(ss_model_weight_bytes(self->model));
}

static PyObject *Model_get_vocab_rows(ModelObject *self, void *closure) {
    (void)closure;
    if (check_model(self) < 0) return NULL;
    return PyLong_FromLong(ss_model_get_config(self->model)->vocab_rows);
}

static PyMethodDef Model_methods[] = {
    {"forward", (PyCFunction)Model_forward, METH_VARARGS, "forward(ids, cache, chunk) -> logits"},
    {"eval_nll", (PyCFunction)Model_eval_nll, METH_VARARGS, "eval_nll(ids, cache, chunk, record) -> tuple"},
    {"forward_tree", (PyCFunction)Model_forward_tree, METH_VARARGS,
     "forward_tree(prefix, tokens, parents, cache) -> (logits, hidden) of a token tree after the prefix"},
    {"to_device", (PyCFunction)Model_to_device, METH_O, "to_device(device): 0 = CPU, 1 = CUDA GPU"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"weight_bytes", (getter)Model_get_weight_bytes, NULL, "bytes of weights read per decode step", NULL},
    {"vocab_rows", (getter)Model_get_vocab_rows, NULL, "rows of the embedding matrices", NULL},
    {"device", (getter)Model_get_device, NULL, "0 = CPU, 1 = CUDA GPU", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "specstream._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A loaded GPT-NeoX model (C core). Use specstream.load().",
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------ MedusaHeads */

typedef struct {
    PyObject_HEAD
    ss_medusa *heads;
    PyObject *target; /* the model the heads read: kept alive */
} MedusaObject;

static void Medusa_dealloc(MedusaObject *self) {
    ss_medusa_free(self->heads);
    Py_XDECREF(self->target);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* MedusaHeads(target, tensors: dict) with tensors "medusa.{i}.w" [d, d],
 * "medusa.{i}.b" [d] and optionally "medusa.{i}.lm_head" [vocab_rows, d]
 * for heads i = 0, 1, ... */
static int Medusa_init(MedusaObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"target", "tensors", NULL};
    PyObject *target, *tensors;
    if (self->heads) {
        PyErr_SetString(PyExc_RuntimeError, "MedusaHeads is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!", kwlist, &ModelType, &target, &PyDict_Type, &tensors) ||
        check_model((ModelObject *)target) < 0)
        return -1;
    int n = 0;
    char name[64];
    for (;; n++) {
        snprintf(name, sizeof name, "medusa.%d.w", n);
        if (!PyDict_GetItemString(tensors, name)) break;
    }
    if (n < 1 || n > SS_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "Medusa heads: expected tensors medusa.0.w, medusa.1.w, ... (1 to %d heads), "
                     "found %d", SS_MAX_DEPTH, n);
        return -1;
    }
    ss_medusa_head_weights *w = PyMem_Calloc((size_t)n, sizeof *w);
    PyObject *keep = PyList_New(0);
    int rc = w && keep ? 0 : -1;
    for (int i = 0; i < n && rc == 0; i++) {
        snprintf(name, sizeof name, "medusa.%d.w", i);
        rc |= get_tensor(tensors, keep, name, &w[i].w);
        snprintf(name, sizeof name, "medusa.%d.b", i);
        rc |= get_tensor(tensors, keep, name, &w[i].b);
        snprintf(name, sizeof name, "medusa.%d.lm_head", i);
        rc |= get_tensor(tensors, keep, name, &w[i].lm_head);
    }
    if (rc != 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        PyMem_Free(w);
        Py_XDECREF(keep);
        return -1;
    }
    ss_error err = {{0}};
    ss_status st;
    ss_medusa *heads = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = ss_medusa_create(((ModelObject *)target)->model, w, n, &heads, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(w);
    Py_DECREF(keep); /* the heads hold f32 copies */
    if (st != SS_OK) {
        ss_py_raise(st, &err);
        return -1;
    }
    self->heads = heads;
    Py_INCREF(target);
    Py_XSETREF(self->target, target);
    return 0;
}

/* logits(hidden [d]) -> [n_heads, vocab_rows] */
static PyObject *Medusa_logits(MedusaObject *self, PyObject *arg) {
    if (!self->heads) {
        PyErr_SetString(PyExc_RuntimeError, "MedusaHeads is not initialised");
        return NULL;
    }
    PyArrayObject *h = (PyArrayObject *)PyArray_FROMANY(arg, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!h) return NULL;
    const ss_model_config *c = ss_model_get_config(((ModelObject *)self->target)->model);
    if (PyArray_DIM(h, 0) != c->d_model) {
        Py_DECREF(h);
        return PyErr_Format(PyExc_ValueError, "hidden state must have d_model = %d values", c->d_model);
    }
    npy_intp dims[2] = {ss_medusa_n_heads(self->heads), c->vocab_rows};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    ss_error err = {{0}};
    ss_status st = SS_OK;
    if (out) {
        Py_BEGIN_ALLOW_THREADS
        st = ss_medusa_logits(self->heads, PyArray_DATA(h), PyArray_DATA(out), &err);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(h);
    if (!out) return NULL;
    if (st != SS_OK || ss_py_check_mapped() < 0) {
        Py_DECREF(out);
        return st != SS_OK ? ss_py_raise(st, &err) : NULL;
    }
    return (PyObject *)out;
}

static PyObject *Medusa_get_n_heads(MedusaObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->heads ? ss_medusa_n_heads(self->heads) : 0);
}

static PyMethodDef Medusa_methods[] = {
    {"logits", (PyCFunction)Medusa_logits, METH_O, "logits(hidden) -> [n_heads, vocab_rows]"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Medusa_getset[] = {
    {"n_heads", (getter)Medusa_get_n_heads, NULL, "number of heads", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MedusaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "specstream._core.MedusaHeads",
    .tp_basicsize = sizeof(MedusaObject),
    .tp_dealloc = (destructor)Medusa_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Medusa heads of a target model (C core). Use specstream.load_medusa().",
    .tp_methods = Medusa_methods,
    .tp_getset = Medusa_getset,
    .tp_init = (initproc)Medusa_init,
    .tp_new = PyType_GenericNew,
};

/* -------------------------------------------------------------- Generator */

typedef struct {
    PyObject_HEAD
    ss_generator *gen;
    PyObject *target, *draft; /* keep the models (or heads) alive */
    int busy;                 /* a step runs without the GIL */
} GeneratorObject;

static void Generator_dealloc(GeneratorObject *self) {
    ss_generator_free(self->gen);
    Py_XDECREF(self->target);
    Py_XDECREF(self->draft);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Every access to self->gen goes through here: while a step runs without
 * the GIL it writes the generator (outbox, counters, caches), so a reader on
 * another thread would see it half-written, and a re-initialisation would
 * free it under the step. */
static int idle(GeneratorObject *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "generator is in use by another thread");
        return -1;
    }
    return 0;
}

static int claim(GeneratorObject *self) {
    if (!self->gen) {
        PyErr_SetString(PyExc_RuntimeError, "generator is not initialised");
        return -1;
    }
    return idle(self);
}

/* Generator(target, target_cache, draft, draft_cache, speculative, sampling, prompt, max_new, stop_ids);
 * draft: a Model (draft and tree methods), MedusaHeads or None; the configs
 * are dicts of field values (missing fields: the core's defaults); a full
 * cache without a capacity is sized by the core. */
static int Generator_init(GeneratorObject *self, PyObject *args, PyObject *kwds) {
    (void)kwds;
    PyObject *target, *tcache_values, *draft, *dcache_values, *spec_values, *samp_values, *prompt_obj, *stop_obj;
    long long max_new;
    if (!PyArg_ParseTuple(args, "O!O!OO!O!O!OLO", &ModelType, &target, &PyDict_Type, &tcache_values, &draft,
                          &PyDict_Type, &dcache_values, &PyDict_Type, &spec_values, &PyDict_Type, &samp_values,
                          &prompt_obj, &max_new, &stop_obj))
        return -1;
    const int is_heads = PyObject_TypeCheck(draft, &MedusaType);
    if (draft != Py_None && !PyObject_TypeCheck(draft, &ModelType) && !is_heads) {
        PyErr_SetString(PyExc_TypeError, "draft must be a Model, MedusaHeads or None");
        return -1;
    }
    if (is_heads && !((MedusaObject *)draft)->heads) {
        PyErr_SetString(PyExc_RuntimeError, "MedusaHeads is not initialised");
        return -1;
    }
    ss_cache_config tcache, dcache;
    ss_speculative spec;
    ss_sampling samp;
    PyObject *keep = PyList_New(0); /* arrays the configs borrow */
    PyArrayObject *prompt = NULL, *stops = NULL;
    if (!keep || ss_py_config_parse(SS_CONFIG_CACHE, tcache_values, &tcache, keep) < 0 ||
        ss_py_config_parse(SS_CONFIG_CACHE, dcache_values, &dcache, keep) < 0 ||
        ss_py_config_parse(SS_CONFIG_SPECULATIVE, spec_values, &spec, keep) < 0 ||
        ss_py_config_parse(SS_CONFIG_SAMPLING, samp_values, &samp, keep) < 0 ||
        check_model((ModelObject *)target) < 0 ||
        (draft != Py_None && !is_heads && check_model((ModelObject *)draft) < 0) ||
        !(prompt = as_ids(prompt_obj, "prompt")) || !(stops = as_ids(stop_obj, "stop_token_ids"))) {
        Py_XDECREF(prompt); Py_XDECREF(stops); Py_XDECREF(keep);
        return -1;
    }
    const npy_intp n_prompt = PyArray_DIM(prompt, 0);
    if (n_prompt > INT32_MAX) {
        Py_DECREF(prompt); Py_DECREF(stops); Py_DECREF(keep);
        PyErr_SetString(PyExc_ValueError, "prompt is too long");
        return -1;
    }
    ss_error err = {{0}};
    ss_status st;
    ss_generator *gen = NULL;
    const ss_model *dm = draft == Py_None || is_heads ? NULL : ((ModelObject *)draft)->model;
    const ss_medusa *heads = is_heads ? ((MedusaObject *)draft)->heads : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = ss_generator_create(((ModelObject *)target)->model, &tcache, dm, &dcache, heads, &spec, &samp,
                             PyArray_DATA(prompt), (int)n_prompt, max_new, PyArray_DATA(stops),
                             (int)PyArray_DIM(stops, 0), &gen, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(prompt);
    Py_DECREF(stops);
    Py_DECREF(keep);
    if (st != SS_OK || ss_py_check_mapped() < 0) {
        if (st != SS_OK) ss_py_raise(st, &err);
        else ss_generator_free(gen);
        return -1;
    }
    /* Checked here, with the GIL held until the swap: a step may have begun
     * on the old generator while this one was being created. */
    if (idle(self) < 0) {
        ss_generator_free(gen);
        return -1;
    }
    ss_generator_free(self->gen);
    self->gen = gen;
    Py_INCREF(target);
    Py_XSETREF(self->target, target);
    Py_INCREF(draft);
    Py_XSETREF(self->draft, draft);
    return 0;
}

/* step(n) -> int32 array of up to n new tokens (fewer only at the end) */
static PyObject *Generator_step(GeneratorObject *self, PyObject *arg) {
    if (claim(self) < 0) return NULL;
    /* Claimed before anything that may run Python code and switch threads
     * (the argument's __index__, allocation). */
    self->busy = 1;
    PyObject *result = NULL;
    PyArrayObject *out = NULL;
    const long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) goto done;
    if (n < 0 || n > (1L << 30)) {
        PyErr_Format(PyExc_ValueError, "step size must be in [0, 2^30], got %ld", n);
        goto done;
    }
    npy_intp dims[1] = {n};
    out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
    if (!out) goto done;
    ss_error err = {{0}};
    ss_status st;
    int got = 0;
    ss_sigint_guard sigint;
    const volatile int *cancel;
    if (ss_sigint_arm(&sigint, &cancel) < 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    st = ss_generator_step(self->gen, PyArray_DATA(out), (int)n, &got, cancel, &err);
    Py_END_ALLOW_THREADS
    /* A cancelled step drops the tokens it had produced (none for a step of
     * one token, which is what TokenStream takes); the generator goes on
     * after them. */
    if (ss_sigint_end(&sigint, st) < 0 || ss_py_check_mapped() < 0) goto done;
    if (st != SS_OK) {
        ss_py_raise(st, &err);
        goto done;
    }
    if (got == n) {
        result = (PyObject *)out;
        out = NULL;
        goto done;
    }
    npy_intp got_dims[1] = {got};
    PyArrayObject *res = (PyArrayObject *)PyArray_SimpleNew(1, got_dims, NPY_INT32);
    if (res) memcpy(PyArray_DATA(res), PyArray_DATA(out), (size_t)got * sizeof(int32_t));
    result = (PyObject *)res;
done:
    Py_XDECREF(out);
    self->busy = 0;
    return result;
}

static PyObject *Generator_stats(GeneratorObject *self, PyObject *args) {
    (void)args;
    if (claim(self) < 0) return NULL;
    const ss_gen_stats *s = ss_generator_stats(self->gen);
    /* acceptance by depth, up to the deepest depth tried */
    int depth = 0;
    for (int d = 1; d <= SS_MAX_DEPTH; d++)
        if (s->depth_tried[d] > 0) depth = d;
    PyObject *tried = PyList_New(depth), *accepted = PyList_New(depth);
    for (int d = 0; tried && accepted && d < depth; d++) {
        PyList_SET_ITEM(tried, d, PyLong_FromLongLong(s->depth_tried[d + 1]));
        PyList_SET_ITEM(accepted, d, PyLong_FromLongLong(s->depth_accepted[d + 1]));
    }
    if (!tried || !accepted) {
        Py_XDECREF(tried);
        Py_XDECREF(accepted);
        return NULL;
    }
    return Py_BuildValue("{sd,sd,sd,sd,sd,sL,sL,sL,sL,sL,sn,sN,sN}", "prefill_s", s->prefill_s, "ttft_s", s->ttft_s,
                         "decode_s", s->decode_s, "draft_s", s->draft_s, "verify_s", s->verify_s,
                         "new_tokens", (long long)s->new_tokens, "target_forwards", (long long)s->target_forwards,
                         "drafted", (long long)s->drafted, "accepted", (long long)s->accepted,
                         "draft_steps", (long long)s->draft_steps, "cache_bytes", (Py_ssize_t)s->cache_bytes,
                         "depth_tried", tried, "depth_accepted", accepted);
}

static PyObject *Generator_get_done(GeneratorObject *self, void *closure) {
    (void)closure;
    if (!self->gen) Py_RETURN_TRUE;
    if (idle(self) < 0) return NULL;
    return PyBool_FromLong(ss_generator_done(self->gen));
}

static PyObject *Generator_get_cache_bytes(GeneratorObject *self, void *closure) {
    (void)closure;
    if (!self->gen) return PyLong_FromLong(0);
    if (idle(self) < 0) return NULL;
    return PyLong_FromSize_t(ss_state_cache_bytes(ss_generator_target_state(self->gen)));
}

static PyMethodDef Generator_methods[] = {
    {"step", (PyCFunction)Generator_step, METH_O, "step(n) -> up to n new tokens"},
    {"stats", (PyCFunction)Generator_stats, METH_NOARGS, "timing and acceptance counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Generator_getset[] = {
    {"done", (getter)Generator_get_done, NULL, "no more tokens will come", NULL},
    {"target_cache_bytes", (getter)Generator_get_cache_bytes, NULL, "KV bytes of the target state", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GeneratorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "specstream._core.Generator",
    .tp_basicsize = sizeof(GeneratorObject),
    .tp_dealloc = (destructor)Generator_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A generation in progress (C core). Use Model.generate() / Model.stream().",
    .tp_methods = Generator_methods,
    .tp_getset = Generator_getset,
    .tp_init = (initproc)Generator_init,
    .tp_new = PyType_GenericNew,
};

int ss_py_add_model(PyObject *m) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&GeneratorType) < 0 || PyType_Ready(&MedusaType) < 0) return -1;
    Py_INCREF(&MedusaType);
    if (PyModule_AddObject(m, "MedusaHeads", (PyObject *)&MedusaType) < 0) {
        Py_DECREF(&MedusaType);
        return -1;
    }
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        return -1;
    }
    Py_INCREF(&GeneratorType);
    if (PyModule_AddObject(m, "Generator", (PyObject *)&GeneratorType) < 0) {
        Py_DECREF(&GeneratorType);
        return -1;
    }
    return 0;
}
