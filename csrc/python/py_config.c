/* Configurations between Python and C, through the core's schemas
 * (specstream.h): a dict of field values becomes a C struct, field by field
 * as its table says, and the core checks it; Python reads names, defaults,
 * limits and choices from the same tables. Nothing here knows a field by
 * name. */
#include "binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL SS_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <float.h>
#include <string.h>

#include "config.h"

/* A wrong type is both a TypeError and a ValueError ("a bad value"), so
 * callers may catch either. */
static PyObject *config_type_error;

static const char *const kind_names[SS_CONFIG_KINDS] = {"model", "cache", "speculative", "sampling"};

static int kind_of(PyObject *name_obj, ss_config_kind *out) {
    const char *name = PyUnicode_Check(name_obj) ? PyUnicode_AsUTF8(name_obj) : NULL;
    for (int k = 0; name && k < SS_CONFIG_KINDS; k++)
        if (!strcmp(name, kind_names[k])) {
            *out = (ss_config_kind)k;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown configuration kind %R (model, cache, speculative or sampling)", name_obj);
    return -1;
}

static int type_error(ss_config_kind kind, const ss_field *f, const char *what, PyObject *value) {
    char label[96];
    ss_field_label(label, sizeof label, kind, f);
    PyErr_Format(config_type_error, "%s must be %s, got %R", label, what, value);
    return -1;
}

static int raise_status(ss_status st, const ss_error *err) {
    ss_py_raise(st, err);
    return -1;
}

/* A special value by its Python spelling: None, or a string naming it. */
static int special_of(const ss_field *f, PyObject *value, double *out) {
    if (value == Py_None) return ss_field_special(f, "None", out);
    if (!PyUnicode_Check(value)) return 0;
    const char *name = PyUnicode_AsUTF8(value);
    return name && strcmp(name, "None") != 0 && ss_field_special(f, name, out);
}

static int is_number(PyObject *v) {
    return !PyBool_Check(v) && (PyFloat_Check(v) || PyLong_Check(v) || PyArray_IsScalar(v, Number));
}

static int parse_ids(ss_config_kind kind, const ss_field *f, PyObject *value, void *config, PyObject *keep) {
    char label[96];
    ss_field_label(label, sizeof label, kind, f);
    if (PyUnicode_Check(value) || PyBytes_Check(value)) return type_error(kind, f, "a sequence of token ids", value);
    PyArrayObject *raw = (PyArrayObject *)PyArray_FROMANY(value, NPY_NOTYPE, 0, 1, NPY_ARRAY_DEFAULT);
    if (!raw) {
        PyErr_Clear();
        return type_error(kind, f, "a sequence of token ids", value);
    }
    if (PyArray_NDIM(raw) != 1 || (PyArray_SIZE(raw) > 0 && !PyArray_ISINTEGER(raw))) {
        Py_DECREF(raw);
        return type_error(kind, f, "a 1-D sequence of integer token ids", value);
    }
    PyArrayObject *wide = (PyArrayObject *)PyArray_FROMANY((PyObject *)raw, NPY_FLOAT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    Py_DECREF(raw);
    if (!wide) return -1;
    const npy_intp n = PyArray_DIM(wide, 0);
    const double *v = PyArray_DATA(wide);
    for (npy_intp i = 0; i < n; i++) {
        if (!ss_field_in_limits(f, v[i])) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: token id %.0f at index %zd is %s", label, v[i], (Py_ssize_t)i,
                     v[i] < 0 ? "negative" : "too large");
            PyErr_SetString(PyExc_ValueError, msg);
            Py_DECREF(wide);
            return -1;
        }
    }
    /* every value is an integer within the field's int range by now */
    PyArrayObject *ids = (PyArrayObject *)PyArray_FROMANY((PyObject *)wide, NPY_INT32, 1, 1,
                                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(wide);
    if (!ids) return -1;
    if (n > 0x7fffffff || PyList_Append(keep, (PyObject *)ids) < 0) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: too many ids", label);
        Py_DECREF(ids);
        return -1;
    }
    *(const int32_t **)((char *)config + f->offset) = PyArray_DATA(ids);
    *(int *)((char *)config + f->count_offset) = (int)n;
    Py_DECREF(ids);
    return 0;
}

/* One Python value into field f of config. */
static int parse_field(ss_config_kind kind, const ss_field *f, PyObject *value, void *config, PyObject *keep) {
    double special;
    if (f->type == SS_FIELD_IDS) return parse_ids(kind, f, value, config, keep);
    if (f->type == SS_FIELD_CHOICE) {
        const char *name = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
        for (int i = 0; name && f->choices[i]; i++)
            if (!strcmp(name, f->choices[i])) {
                ss_field_set(f, config, i);
                return 0;
            }
        char label[96], choices[256];
        ss_field_label(label, sizeof label, kind, f);
        ss_format_choices(choices, sizeof choices, f);
        PyErr_Format(PyExc_ValueError, "%s: unknown %s %R (choose from %s)", label, f->name, value, choices);
        return -1;
    }
    if (special_of(f, value, &special)) {
        ss_field_set(f, config, special);
        return 0;
    }
    switch (f->type) {
    case SS_FIELD_BOOL:
        if (!PyBool_Check(value) && !PyArray_IsScalar(value, Bool)) return type_error(kind, f, "a bool", value);
        ss_field_set(f, config, PyObject_IsTrue(value));
        return 0;
    case SS_FIELD_U64: {
        if (PyBool_Check(value) || !PyIndex_Check(value)) return type_error(kind, f, "an int in [0, 2**64)", value);
        PyObject *i = PyNumber_Index(value);
        const unsigned long long u = i ? PyLong_AsUnsignedLongLong(i) : 0;
        Py_XDECREF(i);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            char label[96];
            ss_field_label(label, sizeof label, kind, f);
            PyErr_Format(PyExc_ValueError, "%s must be an int in [0, 2**64), got %R", label, value);
            return -1;
        }
        *(uint64_t *)((char *)config + f->offset) = u;
        return 0;
    }
    case SS_FIELD_INT: {
        if (PyBool_Check(value) || !PyIndex_Check(value)) return type_error(kind, f, "an integer", value);
        PyObject *i = PyNumber_Index(value);
        if (!i) return -1;
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
        const double approx = overflow ? (overflow > 0 ? 1e300 : -1e300) : (double)v;
        Py_DECREF(i);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (!ss_field_in_limits(f, approx)) { /* special values come by name only */
            ss_error err = {{0}};
            ss_field_range_error(kind, f, approx, &err);
            if (overflow) { /* the message shows Python's own digits */
                char label[96];
                ss_field_label(label, sizeof label, kind, f);
                PyErr_Format(PyExc_ValueError, "%s must be %s %lld, got %R", label, overflow > 0 ? "<=" : ">=",
                             (long long)(overflow > 0 ? f->max : f->min), value);
                return -1;
            }
            return raise_status(SS_ERR_INVALID_ARGUMENT, &err);
        }
        ss_field_set(f, config, approx);
        return 0;
    }
    default: { /* FLOAT, DOUBLE */
        if (!is_number(value)) {
            /* the field's special values, as Python spells them */
            char names[160] = "";
            int named = 0;
            for (const char *p = f->specials; p && *p;) {
                const char *eq = strchr(p, '='), *end = strchr(p, ',');
                if (!eq) break;
                const int is_none = eq - p == 4 && !strncmp(p, "None", 4);
                named |= !is_none;
                const size_t used = strlen(names);
                snprintf(names + used, sizeof names - used, "%s%s%.*s%s", used ? ", " : "", is_none ? "" : "'",
                         (int)(eq - p), p, is_none ? "" : "'");
                if (!end) break;
                p = end + 1;
            }
            char label[96];
            ss_field_label(label, sizeof label, kind, f);
            if (named && PyUnicode_Check(value)) { /* a name, but not one of these */
                PyErr_Format(PyExc_ValueError, "%s must be a number or one of %s, got %R", label, names, value);
                return -1;
            }
            PyErr_Format(config_type_error, "%s must be a number%s%s, got %R", label, names[0] ? " or " : "", names,
                         value);
            return -1;
        }
        double v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred()) { /* an int beyond a double */
            PyErr_Clear();
            v = HUGE_VAL;
        }
        if (f->type == SS_FIELD_FLOAT && (v > FLT_MAX || v < -FLT_MAX)) v = v > 0 ? HUGE_VAL : -HUGE_VAL;
        if (!ss_field_in_limits(f, v)) { /* special values come by name only */
            ss_error err = {{0}};
            ss_field_range_error(kind, f, v, &err);
            return raise_status(SS_ERR_INVALID_ARGUMENT, &err);
        }
        ss_field_set(f, config, v);
        return 0;
    }
    }
}

int ss_py_config_parse(ss_config_kind kind, PyObject *values, void *config, PyObject *keep) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    ss_config_defaults(kind, config);
    if (!PyDict_Check(values)) {
        PyErr_Format(PyExc_TypeError, "%s values must be a dict, got %s", s->name ? s->name : kind_names[kind],
                     Py_TYPE(values)->tp_name);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(values, &pos, &key, &value)) {
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        const ss_field *f = name ? ss_config_field(kind, name) : NULL;
        if (!f) {
            PyErr_Format(PyExc_TypeError, "%s has no field %R", s->name ? s->name : kind_names[kind], key);
            return -1;
        }
        if (parse_field(kind, f, value, config, keep) < 0) return -1;
    }
    ss_error err = {{0}};
    const ss_status st = ss_config_check(kind, config, &err);
    return st == SS_OK ? 0 : raise_status(st, &err);
}

/* ------------------------------------------------------------ to Python */

static PyObject *special_name(const ss_field *f, double value) {
    for (const char *p = f->specials; p && *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!eq) break;
        if (strtod(eq + 1, NULL) == value) {
            if (eq - p == 4 && !strncmp(p, "None", 4)) Py_RETURN_NONE;
            return PyUnicode_FromStringAndSize(p, eq - p);
        }
        if (!end) break;
        p = end + 1;
    }
    return NULL;
}

static PyObject *field_value(const ss_field *f, const void *config) {
    const double v = ss_field_get(f, config);
    if (f->type != SS_FIELD_CHOICE && f->type != SS_FIELD_IDS && f->type != SS_FIELD_U64) {
        PyObject *special = special_name(f, v);
        if (special) return special;
    }
    switch (f->type) {
    case SS_FIELD_INT: return PyLong_FromDouble(v);
    case SS_FIELD_BOOL: return PyBool_FromLong(v != 0.0);
    case SS_FIELD_CHOICE: return PyUnicode_FromString(f->choices[(int)v]);
    case SS_FIELD_U64: return PyLong_FromUnsignedLongLong(*(const uint64_t *)((const char *)config + f->offset));
    case SS_FIELD_IDS: {
        const int32_t *ids = *(const int32_t *const *)((const char *)config + f->offset);
        PyObject *t = PyTuple_New((Py_ssize_t)v);
        for (Py_ssize_t i = 0; t && i < (Py_ssize_t)v; i++) {
            PyObject *id = PyLong_FromLong(ids[i]);
            if (!id) {
                Py_CLEAR(t);
                break;
            }
            PyTuple_SET_ITEM(t, i, id);
        }
        return t;
    }
    default: return PyFloat_FromDouble(v);
    }
}

static PyObject *config_dict(ss_config_kind kind, const void *config) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < s->n_fields; i++) {
        PyObject *v = field_value(&s->fields[i], config);
        if (!v || PyDict_SetItemString(d, s->fields[i].name, v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

/* config_check(kind, values) -> the values as the core holds them (defaults
 * filled in, numbers normalised), or the core's exception. */
static PyObject *py_config_check(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *kind_obj, *values;
    ss_config_kind kind;
    if (!PyArg_ParseTuple(args, "OO", &kind_obj, &values) || kind_of(kind_obj, &kind) < 0) return NULL;
    union {
        ss_model_config model;
        ss_cache_config cache;
        ss_speculative speculative;
        ss_sampling sampling;
    } config;
    PyObject *keep = PyList_New(0);
    if (!keep) return NULL;
    PyObject *out = ss_py_config_parse(kind, values, &config, keep) < 0 ? NULL : config_dict(kind, &config);
    Py_DECREF(keep);
    return out;
}

static const char *const type_names[] = {"int", "float", "float", "bool", "choice", "uint64", "ids"};

/* config_schema(kind) -> [{name, type, default, min, max, min_open,
 * max_open, choices, specials, doc}, ...] in declaration order. */
static PyObject *py_config_schema(PyObject *self, PyObject *kind_obj) {
    (void)self;
    ss_config_kind kind;
    if (kind_of(kind_obj, &kind) < 0) return NULL;
    const ss_config_schema *s = ss_config_schema_of(kind);
    union {
        ss_model_config model;
        ss_cache_config cache;
        ss_speculative speculative;
        ss_sampling sampling;
    } defaults;
    ss_config_defaults(kind, &defaults);
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < s->n_fields; i++) {
        const ss_field *f = &s->fields[i];
        /* floats as written in the field list, not as float32 rounds them */
        const int exact = (f->type == SS_FIELD_FLOAT || f->type == SS_FIELD_DOUBLE) &&
                          ss_field_in_limits(f, f->default_value);
        PyObject *choices = Py_None, *specials = PyDict_New();
        PyObject *def = exact ? PyFloat_FromDouble(f->default_value) : field_value(f, &defaults);
        Py_INCREF(Py_None);
        if (f->choices) {
            Py_DECREF(choices);
            choices = PyList_New(0);
            for (int c = 0; choices && f->choices[c]; c++) {
                PyObject *name = PyUnicode_FromString(f->choices[c]);
                if (!name || PyList_Append(choices, name) < 0) Py_CLEAR(choices);
                Py_XDECREF(name);
            }
        }
        for (const char *p = f->specials; specials && p && *p;) {
            const char *eq = strchr(p, '='), *end = strchr(p, ',');
            if (!eq) break;
            PyObject *name = PyUnicode_FromStringAndSize(p, eq - p), *val = PyFloat_FromDouble(strtod(eq + 1, NULL));
            if (!name || !val || PyDict_SetItem(specials, name, val) < 0) Py_CLEAR(specials);
            Py_XDECREF(name);
            Py_XDECREF(val);
            if (!end) break;
            p = end + 1;
        }
        PyObject *entry = choices && specials && def
                              ? Py_BuildValue("{s:s,s:s,s:O,s:d,s:d,s:O,s:O,s:O,s:O,s:s}", "name", f->name, "type",
                                              type_names[f->type], "default", def, "min", f->min, "max", f->max,
                                              "min_open", f->bounds & SS_OPEN_MIN ? Py_True : Py_False, "max_open",
                                              f->bounds & SS_OPEN_MAX ? Py_True : Py_False, "choices", choices,
                                              "specials", specials, "doc", f->doc)
                              : NULL;
        Py_XDECREF(choices);
        Py_XDECREF(specials);
        Py_XDECREF(def);
        if (!entry || PyList_Append(list, entry) < 0) Py_CLEAR(list);
        Py_XDECREF(entry);
    }
    return list;
}

static const char *const dim_names[] = {"1", "d", "3d", "ff", "vocab"};

/* tensor_specs() -> [(name, per_layer, rows, cols, attention_bias), ...]
 * with dims as "d", "3d", "ff", "vocab", "1"; per-layer names hold a %d. */
static PyObject *py_tensor_specs(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    int n;
    const ss_tensor_spec *t = ss_tensor_specs(&n);
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < n; i++) {
        PyObject *e = Py_BuildValue("(sOssO)", t[i].name, t[i].per_layer ? Py_True : Py_False, dim_names[t[i].rows],
                                    dim_names[t[i].cols], t[i].attention_bias ? Py_True : Py_False);
        if (!e || PyList_Append(list, e) < 0) Py_CLEAR(list);
        Py_XDECREF(e);
    }
    return list;
}

static PyMethodDef config_methods[] = {
    {"config_check", py_config_check, METH_VARARGS,
     "config_check(kind, values: dict) -> dict: the values as the core holds them, or the core's exception"},
    {"config_schema", py_config_schema, METH_O, "config_schema(kind) -> list of field descriptions"},
    {"tensor_specs", py_tensor_specs, METH_NOARGS,
     "tensor_specs() -> [(name, per_layer, rows, cols, attention_bias)]: the GPT-NeoX tensor table"},
    {NULL, NULL, 0, NULL},
};

int ss_py_add_config(PyObject *module) {
    PyObject *bases = PyTuple_Pack(2, PyExc_TypeError, PyExc_ValueError);
    if (!bases) return -1;
    config_type_error = PyErr_NewExceptionWithDoc(
        "specstream._core.ConfigTypeError", "A configuration value of the wrong type (a TypeError and a ValueError).",
        bases, NULL);
    Py_DECREF(bases);
    if (!config_type_error || PyModule_AddObject(module, "ConfigTypeError", config_type_error) < 0) return -1;
    Py_INCREF(config_type_error);
    return PyModule_AddFunctions(module, config_methods);
}
