/* Python types Tokenizer and DecodeStream over csrc/tokenizer. The JSON is
 * parsed and checked by the Python package (specstream/tokenizer.py), which
 * hands over plain arrays; this file converts them and releases the GIL
 * while long texts are encoded or decoded. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

/* Below this many bytes (or ids), taking the GIL back costs more than the
 * call itself. */
#define GIL_RELEASE_BYTES 4096

/* Bad token ids are a ValueError for the tokenizer (IndexError elsewhere). */
static PyObject *raise_tok(ss_status st, const ss_error *err) {
    if (st == SS_ERR_OUT_OF_RANGE) {
        PyErr_SetString(PyExc_ValueError, err->message[0] ? err->message : "token id out of range");
        return NULL;
    }
    return ss_py_raise(st, err);
}

/* The bytes to encode: a str's UTF-8 -- borrowed from the object when it is
 * ASCII, else in a new bytes object (*keep) rather than the copy CPython
 * would cache on the str for as long as it lives -- or a bytes object's
 * contents as they are (any bytes; see tokenizer.h for ill-formed UTF-8). */
static const char *text_bytes(PyObject *text, Py_ssize_t *len, PyObject **keep) {
    *keep = NULL;
    if (PyBytes_Check(text)) {
        *len = PyBytes_GET_SIZE(text);
        return PyBytes_AS_STRING(text);
    }
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "text must be str or bytes, not %.100s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    if (PyUnicode_IS_ASCII(text)) return PyUnicode_AsUTF8AndSize(text, len);
    *keep = PyUnicode_AsUTF8String(text);
    if (!*keep) return NULL;
    *len = PyBytes_GET_SIZE(*keep);
    return PyBytes_AS_STRING(*keep);
}

/* -------------------------------------------------------------- Tokenizer */

typedef struct {
    PyObject_HEAD
    ss_tokenizer *tok;
} TokenizerObject;

static void Tokenizer_dealloc(TokenizerObject *self) {
    ss_tokenizer_free(self->tok);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_tok(TokenizerObject *self) {
    if (self->tok) return 0;
    PyErr_SetString(PyExc_RuntimeError, "Tokenizer is not initialised");
    return -1;
}

/* added: list of (content, pattern, id, special, normalized, lstrip, rstrip,
 * single_word); the strings stay owned by the list. */
static ss_added_token *parse_added(PyObject *list, Py_ssize_t *n) {
    *n = PyList_GET_SIZE(list);
    ss_added_token *added = calloc((size_t)*n + 1, sizeof *added);
    if (!added) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        ss_added_token *a = &added[i];
        Py_ssize_t clen, plen;
        int id;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "s#s#ippppp;added token tuple", &a->content, &clen,
                              &a->pattern, &plen, &id, &a->special, &a->normalized, &a->lstrip, &a->rstrip,
                              &a->single_word)) {
            free(added);
            return NULL;
        }
        a->content_len = (size_t)clen;
        a->pattern_len = (size_t)plen;
        a->id = id;
    }
    return added;
}

static int Tokenizer_init(TokenizerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"vocab_data", "vocab_offsets", "merges", "added", "unk_id", "fuse_unk",
                             "add_prefix_space", "use_regex", "ignore_merges", NULL};
    const char *data;
    Py_ssize_t data_len;
    PyObject *offsets_obj, *merges_obj, *added_list;
    ss_tokenizer_config c;
    memset(&c, 0, sizeof c);
    int unk_id;
    if (self->tok) {
        /* Another thread may be encoding with the current one. */
        PyErr_SetString(PyExc_RuntimeError, "Tokenizer is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y#OOO!ipppp", kwlist, &data, &data_len, &offsets_obj,
                                     &merges_obj, &PyList_Type, &added_list, &unk_id, &c.fuse_unk,
                                     &c.add_prefix_space, &c.use_regex, &c.ignore_merges))
        return -1;
    PyArrayObject *offsets = (PyArrayObject *)PyArray_FROMANY(offsets_obj, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    PyArrayObject *merges = (PyArrayObject *)PyArray_FROMANY(merges_obj, NPY_INT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    Py_ssize_t n_added = 0;
    ss_added_token *added = NULL;
    int rc = -1;
    if (!offsets || !merges) goto done;
    npy_intp n_off = PyArray_DIM(offsets, 0);
    if (n_off < 1 || n_off - 1 > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "vocab_offsets must have 1 to 2^31 entries, got %zd", (Py_ssize_t)n_off);
        goto done;
    }
    if (PyArray_DIM(merges, 1) != 3 || PyArray_DIM(merges, 0) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "merges must be an (n, 3) int32 array");
        goto done;
    }
    const int64_t *off = (const int64_t *)PyArray_DATA(offsets);
    if (off[n_off - 1] != (int64_t)data_len) {
        PyErr_Format(PyExc_ValueError, "vocab_offsets ends at %lld but vocab_data has %zd bytes",
                     (long long)off[n_off - 1], data_len);
        goto done;
    }
    if (!(added = parse_added(added_list, &n_added))) goto done;
    if (n_added > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many added tokens");
        goto done;
    }
    c.n_vocab_ids = (int32_t)(n_off - 1);
    c.vocab_data = data;
    c.vocab_offsets = off;
    c.n_merges = (int32_t)PyArray_DIM(merges, 0);
    c.merges = (const int32_t *)PyArray_DATA(merges);
    c.n_added = (int32_t)n_added;
    c.added = added;
    c.unk_id = unk_id;
    ss_error err = {{0}};
    ss_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ss_tokenizer_create(&c, &self->tok, &err);
    Py_END_ALLOW_THREADS
    if (st != SS_OK) {
        raise_tok(st, &err);
        goto done;
    }
    rc = 0;
done:
    free(added);
    Py_XDECREF(offsets);
    Py_XDECREF(merges);
    return rc;
}

static PyObject *Tokenizer_encode(TokenizerObject *self, PyObject *args) {
    PyObject *text, *keep;
    unsigned int flags = SS_TOK_MATCH_ALL;
    if (check_tok(self) < 0 || !PyArg_ParseTuple(args, "O|I", &text, &flags)) return NULL;
    Py_ssize_t len;
    const char *s = text_bytes(text, &len, &keep);
    if (!s) return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    ss_error err = {{0}};
    ss_status st;
    if (len >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        st = ss_tokenizer_encode(self->tok, s, (size_t)len, flags, &ids, &n, &err);
        Py_END_ALLOW_THREADS
    } else {
        st = ss_tokenizer_encode(self->tok, s, (size_t)len, flags, &ids, &n, &err);
    }
    Py_XDECREF(keep);
    if (st != SS_OK) return raise_tok(st, &err);
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_SimpleNew(1, dims, NPY_INT32);
    if (arr && n) memcpy(PyArray_DATA((PyArrayObject *)arr), ids, n * sizeof(int32_t));
    free(ids);
    return arr;
}

static PyObject *Tokenizer_split_added(TokenizerObject *self, PyObject *args) {
    PyObject *text, *keep;
    if (check_tok(self) < 0 || !PyArg_ParseTuple(args, "U", &text)) return NULL;
    Py_ssize_t len;
    const char *s = text_bytes(text, &len, &keep);
    if (!s) return NULL;
    ss_token_span *spans = NULL;
    size_t n = 0;
    ss_error err = {{0}};
    ss_status st = ss_tokenizer_split_added(self->tok, s, (size_t)len, &spans, &n, &err);
    PyObject *out = NULL;
    if (st != SS_OK) {
        raise_tok(st, &err);
    } else if (n == 0) {
        Py_INCREF(Py_None);
        out = Py_None;
    } else if ((out = PyList_New((Py_ssize_t)n))) {
        for (size_t i = 0; i < n; i++) {
            /* Spans start and end on character boundaries, so each text
             * piece is valid UTF-8 in its own right. */
            PyObject *item = spans[i].id >= 0
                                 ? PyLong_FromLong(spans[i].id)
                                 : PyUnicode_DecodeUTF8(s + spans[i].start,
                                                        (Py_ssize_t)(spans[i].end - spans[i].start), "strict");
            if (!item) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        }
    }
    free(spans);
    Py_XDECREF(keep);
    return out;
}

/* ids: a 1-D integer array-like (the Python wrapper checks the dtype) as a
 * malloc'ed int32 array; ids outside int32 get the message C would give. */
static int32_t *ids_from(TokenizerObject *self, PyObject *obj, size_t *n) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    *n = (size_t)PyArray_DIM(a, 0);
    const int64_t *v = (const int64_t *)PyArray_DATA(a);
    int32_t *ids = malloc(*n * sizeof(int32_t) + 1);
    if (!ids) PyErr_NoMemory();
    for (size_t i = 0; ids && i < *n; i++) {
        if (v[i] < 0 || v[i] > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "token id %lld (at position %zu) is not in the vocabulary (ids 0..%d)",
                         (long long)v[i], i, ss_tokenizer_n_ids(self->tok) - 1);
            free(ids);
            ids = NULL;
            break;
        }
        ids[i] = (int32_t)v[i];
    }
    Py_DECREF(a);
    return ids;
}

static PyObject *Tokenizer_decode(TokenizerObject *self, PyObject *args) {
    PyObject *ids_obj;
    int skip_special = 0;
    if (check_tok(self) < 0 || !PyArg_ParseTuple(args, "O|p", &ids_obj, &skip_special)) return NULL;
    size_t n;
    int32_t *ids = ids_from(self, ids_obj, &n);
    if (!ids) return NULL;
    char *text = NULL;
    size_t len = 0;
    ss_error err = {{0}};
    ss_status st;
    if (n >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        st = ss_tokenizer_decode(self->tok, ids, n, skip_special, &text, &len, &err);
        Py_END_ALLOW_THREADS
    } else {
        st = ss_tokenizer_decode(self->tok, ids, n, skip_special, &text, &len, &err);
    }
    free(ids);
    if (st != SS_OK) return raise_tok(st, &err);
    PyObject *out = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
    free(text);
    return out;
}

static int id_arg(PyObject *obj, int32_t *id) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < 0 || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "token id %R is not in the vocabulary", obj);
        return -1;
    }
    *id = (int32_t)v;
    return 0;
}

static PyObject *Tokenizer_token_bytes(TokenizerObject *self, PyObject *arg) {
    int32_t id;
    if (check_tok(self) < 0 || id_arg(arg, &id) < 0) return NULL;
    const char *b;
    size_t len;
    ss_error err = {{0}};
    ss_status st = ss_tokenizer_token_bytes(self->tok, id, &b, &len, &err);
    if (st != SS_OK) return raise_tok(st, &err);
    return PyBytes_FromStringAndSize(b, (Py_ssize_t)len);
}

static PyObject *Tokenizer_is_special(TokenizerObject *self, PyObject *arg) {
    int32_t id;
    if (check_tok(self) < 0 || id_arg(arg, &id) < 0) return NULL;
    return PyBool_FromLong(ss_tokenizer_is_special(self->tok, id));
}

static PyObject *Tokenizer_n_ids(TokenizerObject *self, void *closure) {
    (void)closure;
    if (check_tok(self) < 0) return NULL;
    return PyLong_FromLong(ss_tokenizer_n_ids(self->tok));
}

static PyObject *Tokenizer_decode_stream(TokenizerObject *self, PyObject *args);

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)Tokenizer_encode, METH_VARARGS,
     "encode(text, flags=3) -> int32 array of str (as UTF-8) or bytes (as they are). flags: 1 split raw "
     "added tokens, 2 normalized ones."},
    {"split_added", (PyCFunction)Tokenizer_split_added, METH_VARARGS,
     "split_added(text) -> list of str pieces and int token ids, or None without raw added tokens."},
    {"decode", (PyCFunction)Tokenizer_decode, METH_VARARGS, "decode(ids, skip_special=False) -> str"},
    {"token_bytes", (PyCFunction)Tokenizer_token_bytes, METH_O, "token_bytes(id) -> bytes decoding id gives"},
    {"is_special", (PyCFunction)Tokenizer_is_special, METH_O, "is_special(id) -> bool"},
    {"decode_stream", (PyCFunction)Tokenizer_decode_stream, METH_VARARGS,
     "decode_stream(skip_special=False) -> DecodeStream"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"n_ids", (getter)Tokenizer_n_ids, NULL, "size of the id space", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TokenizerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "specstream._core.Tokenizer",
    .tp_basicsize = sizeof(TokenizerObject),
    .tp_dealloc = (destructor)Tokenizer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Byte-level BPE tokenizer (C core). Use specstream.Tokenizer.from_file().",
    .tp_methods = Tokenizer_methods,
    .tp_getset = Tokenizer_getset,
    .tp_init = (initproc)Tokenizer_init,
    .tp_new = PyType_GenericNew,
};

/* ----------------------------------------------------------- DecodeStream */

typedef struct {
    PyObject_HEAD
    ss_decode_stream *stream;
    PyObject *owner; /* the Tokenizer, kept alive while the stream lives */
} DecodeStreamObject;

static void DecodeStream_dealloc(DecodeStreamObject *self) {
    ss_decode_stream_free(self->stream);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *DecodeStream_push(DecodeStreamObject *self, PyObject *arg) {
    int32_t id;
    if (id_arg(arg, &id) < 0) return NULL;
    const char *text;
    size_t len;
    ss_error err = {{0}};
    ss_status st = ss_decode_stream_push(self->stream, id, &text, &len, &err);
    if (st != SS_OK) return raise_tok(st, &err);
    return PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
}

static PyObject *DecodeStream_flush(DecodeStreamObject *self, PyObject *args) {
    (void)args;
    const char *text;
    size_t len;
    ss_decode_stream_flush(self->stream, &text, &len);
    return PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
}

static PyMethodDef DecodeStream_methods[] = {
    {"push", (PyCFunction)DecodeStream_push, METH_O,
     "push(id) -> str: the text completed by this token (may be empty)."},
    {"flush", (PyCFunction)DecodeStream_flush, METH_NOARGS,
     "flush() -> str: what is left; a dangling partial character becomes U+FFFD."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecodeStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "specstream._core.DecodeStream",
    .tp_basicsize = sizeof(DecodeStreamObject),
    .tp_dealloc = (destructor)DecodeStream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Incremental decoder (C core). Use Tokenizer.decode_stream().",
    .tp_methods = DecodeStream_methods,
};

static PyObject *Tokenizer_decode_stream(TokenizerObject *self, PyObject *args) {
    int skip_special = 0;
    if (check_tok(self) < 0 || !PyArg_ParseTuple(args, "|p", &skip_special)) return NULL;
    DecodeStreamObject *obj = PyObject_New(DecodeStreamObject, &DecodeStreamType);
    if (!obj) return NULL;
    obj->stream = NULL;
    Py_INCREF(self);
    obj->owner = (PyObject *)self;
    ss_error err = {{0}};
    ss_status st = ss_decode_stream_create(self->tok, skip_special, &obj->stream, &err);
    if (st != SS_OK) {
        Py_DECREF(obj);
        return raise_tok(st, &err);
    }
    return (PyObject *)obj;
}

/* ----------------------------------------------------------------- module */

static PyObject *pretokenize(PyObject *module, PyObject *arg) {
    (void)module;
    PyObject *keep;
    Py_ssize_t len;
    const char *s = text_bytes(arg, &len, &keep);
    if (!s) return NULL;
    size_t *ends = NULL, n = 0;
    ss_error err = {{0}};
    ss_status st = ss_pretokenize(s, (size_t)len, &ends, &n, &err);
    PyObject *out = NULL;
    if (st != SS_OK) {
        raise_tok(st, &err);
    } else if ((out = PyList_New((Py_ssize_t)n))) {
        for (size_t i = 0, start = 0; i < n; start = ends[i++]) {
            /* Words of a str start and end on character boundaries; words
             * of bytes are returned as bytes. */
            PyObject *w = PyBytes_Check(arg) ? PyBytes_FromStringAndSize(s + start, (Py_ssize_t)(ends[i] - start))
                                             : PyUnicode_DecodeUTF8(s + start, (Py_ssize_t)(ends[i] - start), "strict");
            if (!w) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, (Py_ssize_t)i, w);
        }
    }
    free(ends);
    Py_XDECREF(keep);
    return out;
}

static PyMethodDef tokenizer_functions[] = {
    {"pretokenize", pretokenize, METH_O, "pretokenize(text) -> list of the words the GPT-2 regex cuts text into"},
    {NULL, NULL, 0, NULL},
};

int ss_py_add_tokenizer(PyObject *module) {
    if (PyModule_AddFunctions(module, tokenizer_functions) < 0) return -1;
    if (PyType_Ready(&TokenizerType) < 0 || PyType_Ready(&DecodeStreamType) < 0) return -1;
    Py_INCREF(&TokenizerType);
    if (PyModule_AddObject(module, "Tokenizer", (PyObject *)&TokenizerType) < 0) {
        Py_DECREF(&TokenizerType);
        return -1;
    }
    Py_INCREF(&DecodeStreamType);
    if (PyModule_AddObject(module, "DecodeStream", (PyObject *)&DecodeStreamType) < 0) {
        Py_DECREF(&DecodeStreamType);
        return -1;
    }
    return 0;
}
