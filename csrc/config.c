/* Configuration schemas: the run-time tables of the configuration structs,
 * generated from their field lists in specstream.h, and the checks every
 * configuration goes through (each field against its limits, then the rules
 * of the module that owns the struct). */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define COUNT_OFFSET_INT(S, name) 0
#define COUNT_OFFSET_FLOAT(S, name) 0
#define COUNT_OFFSET_DOUBLE(S, name) 0
#define COUNT_OFFSET_BOOL(S, name) 0
#define COUNT_OFFSET_CHOICE(S, name) 0
#define COUNT_OFFSET_U64(S, name) 0
#define COUNT_OFFSET_IDS(S, name) offsetof(S, n_##name)
#define ENTRY(S, type, name, def, lo, hi, bounds, choices, specials, doc)                                    \
    {#name, SS_FIELD_##type, offsetof(S, name), COUNT_OFFSET_##type(S, name), (double)(def), (double)(lo), \
     (double)(hi), bounds, choices, specials, doc},
#define MODEL_ENTRY(...) ENTRY(ss_model_config, __VA_ARGS__)
#define CACHE_ENTRY(...) ENTRY(ss_cache_config, __VA_ARGS__)
#define SPECULATIVE_ENTRY(...) ENTRY(ss_speculative, __VA_ARGS__)
#define SAMPLING_ENTRY(...) ENTRY(ss_sampling, __VA_ARGS__)

static const ss_field model_fields[] = {SS_MODEL_FIELDS(MODEL_ENTRY)};
static const ss_field cache_fields[] = {SS_CACHE_FIELDS(CACHE_ENTRY)};
static const ss_field speculative_fields[] = {SS_SPECULATIVE_FIELDS(SPECULATIVE_ENTRY)};
static const ss_field sampling_fields[] = {SS_SAMPLING_FIELDS(SAMPLING_ENTRY)};

#define SCHEMA(name, S, fields) {name, sizeof(S), fields, (int)(sizeof fields / sizeof fields[0])}
static const ss_config_schema schemas[SS_CONFIG_KINDS] = {
    [SS_CONFIG_MODEL] = SCHEMA("ModelConfig", ss_model_config, model_fields),
    [SS_CONFIG_CACHE] = SCHEMA("CacheConfig", ss_cache_config, cache_fields),
    [SS_CONFIG_SPECULATIVE] = SCHEMA("SpeculativeConfig", ss_speculative, speculative_fields),
    /* sampling parameters are arguments of a call: messages name them bare */
    [SS_CONFIG_SAMPLING] = SCHEMA(NULL, ss_sampling, sampling_fields),
};

const ss_config_schema *ss_config_schema_of(ss_config_kind kind) {
    return kind >= 0 && kind < SS_CONFIG_KINDS ? &schemas[kind] : NULL;
}

/* ------------------------------------------------------------ members */

static void *member(void *config, size_t offset) { return (char *)config + offset; }
static const void *cmember(const void *config, size_t offset) { return (const char *)config + offset; }

double ss_field_get(const ss_field *f, const void *config) {
    const void *p = cmember(config, f->offset);
    switch (f->type) {
    case SS_FIELD_FLOAT: return *(const float *)p;
    case SS_FIELD_DOUBLE: return *(const double *)p;
    case SS_FIELD_U64: return (double)*(const uint64_t *)p;
    case SS_FIELD_IDS: return *(const int *)cmember(config, f->count_offset);
    default: return *(const int *)p;
    }
}

void ss_field_set(const ss_field *f, void *config, double value) {
    void *p = member(config, f->offset);
    switch (f->type) {
    case SS_FIELD_FLOAT: *(float *)p = (float)value; break;
    case SS_FIELD_DOUBLE: *(double *)p = value; break;
    case SS_FIELD_U64: *(uint64_t *)p = (uint64_t)value; break;
    case SS_FIELD_IDS:
        *(const int32_t **)p = NULL;
        *(int *)member(config, f->count_offset) = 0;
        break;
    default: *(int *)p = (int)value; break;
    }
}

void ss_config_defaults(ss_config_kind kind, void *config) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    if (!s) return;
    memset(config, 0, s->size);
    for (int i = 0; i < s->n_fields; i++) ss_field_set(&s->fields[i], config, s->fields[i].default_value);
}

const ss_field *ss_config_field(ss_config_kind kind, const char *name) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    for (int i = 0; s && i < s->n_fields; i++)
        if (!strcmp(s->fields[i].name, name)) return &s->fields[i];
    return NULL;
}

int ss_field_special(const ss_field *f, const char *name, double *value) {
    for (const char *p = f->specials; p && *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!eq) return 0;
        if (!end) end = p + strlen(p);
        if ((size_t)(eq - p) == strlen(name) && !strncmp(p, name, (size_t)(eq - p))) {
            if (value) *value = strtod(eq + 1, NULL);
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Whether value is one of the field's special values. */
static int is_special_value(const ss_field *f, double value) {
    for (const char *p = f->specials; p && *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!eq) return 0;
        if (strtod(eq + 1, NULL) == value) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

/* ------------------------------------------------------------ messages */

void ss_field_label(char *buf, size_t size, ss_config_kind kind, const ss_field *f) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    if (s && s->name) snprintf(buf, size, "%s.%s", s->name, f->name);
    else snprintf(buf, size, "%s", f->name);
}

void ss_format_number(char *buf, size_t size, double v, ss_field_type type) {
    if (type == SS_FIELD_INT || type == SS_FIELD_BOOL || type == SS_FIELD_CHOICE || type == SS_FIELD_IDS) {
        snprintf(buf, size, "%.0f", v);
        return;
    }
    if (isnan(v) || isinf(v)) {
        snprintf(buf, size, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    /* the shortest digits that read back as the same value (float: as a
     * float), with ".0" on integral values, as Python prints numbers */
    const int max_digits = type == SS_FIELD_FLOAT ? 9 : 17;
    for (int digits = 1; digits <= max_digits; digits++) {
        snprintf(buf, size, "%.*g", digits, v);
        const double back = strtod(buf, NULL);
        if (type == SS_FIELD_FLOAT ? (float)back == (float)v : back == v) break;
    }
    if (!strpbrk(buf, ".en")) strncat(buf, ".0", size - strlen(buf) - 1);
}

/* A limit as written in the field list: "0", "1000", "0.5". */
static void format_limit(char *buf, size_t size, double v) {
    if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, size, "%.0f", v);
    else ss_format_number(buf, size, v, SS_FIELD_DOUBLE);
}

/* "[0, 1]", "(0, 1]", ... */
static void format_range(char *buf, size_t size, const ss_field *f) {
    char lo[40], hi[40];
    format_limit(lo, sizeof lo, f->min);
    format_limit(hi, sizeof hi, f->max);
    snprintf(buf, size, "%c%s, %s%c", f->bounds & SS_OPEN_MIN ? '(' : '[', lo, hi, f->bounds & SS_OPEN_MAX ? ')' : ']');
}

/* Names of the field's special values, for messages: " or none/measured". */
static void format_specials(char *buf, size_t size, const ss_field *f) {
    buf[0] = '\0';
    for (const char *p = f->specials; p && *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!eq) break;
        const size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s%.*s", used ? ", " : " or ", (int)(eq - p), p);
        if (!end) break;
        p = end + 1;
    }
}

ss_status ss_field_range_error(ss_config_kind kind, const ss_field *f, double value, ss_error *err) {
    char label[96], got[40], range[96], specials[96];
    ss_field_label(label, sizeof label, kind, f);
    ss_format_number(got, sizeof got, value, f->type);
    format_specials(specials, sizeof specials, f);
    if (f->type == SS_FIELD_INT || f->type == SS_FIELD_IDS) {
        if (value < f->min)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s must be >= %.0f%s, got %s", label, f->min, specials, got);
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s must be <= %.0f%s, got %s", label, f->max, specials, got);
    }
    if (f->max >= 3.4028234663852886e38 && !(f->bounds & SS_OPEN_MAX)) { /* no upper limit but finiteness */
        format_limit(range, sizeof range, f->min);
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s must be a finite number %s %s%s, got %s", label,
                       f->bounds & SS_OPEN_MIN ? ">" : ">=", range, specials, got);
    }
    format_range(range, sizeof range, f);
    return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s must be in %s%s, got %s", label, range, specials, got);
}

/* ------------------------------------------------------------ checks */

int ss_field_in_range(const ss_field *f, double value) {
    return is_special_value(f, value) || ss_field_in_limits(f, value);
}

int ss_field_in_limits(const ss_field *f, double value) {
    if (!(value >= f->min && value <= f->max)) return 0; /* NaN fails here */
    if ((f->bounds & SS_OPEN_MIN) && value == f->min) return 0;
    if ((f->bounds & SS_OPEN_MAX) && value == f->max) return 0;
    return 1;
}

static int n_choices(const ss_field *f) {
    int n = 0;
    while (f->choices && f->choices[n]) n++;
    return n;
}

void ss_format_choices(char *buf, size_t size, const ss_field *f) {
    buf[0] = '\0';
    for (int i = 0; f->choices && f->choices[i]; i++) {
        const size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s%s", i ? ", " : "", f->choices[i]);
    }
}

static ss_status check_field(ss_config_kind kind, const ss_field *f, const void *config, ss_error *err) {
    char label[96];
    const double v = ss_field_get(f, config);
    switch (f->type) {
    case SS_FIELD_U64: return SS_OK;
    case SS_FIELD_BOOL:
        if (v == 0.0 || v == 1.0) return SS_OK;
        ss_field_label(label, sizeof label, kind, f);
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s must be 0 or 1, got %.0f", label, v);
    case SS_FIELD_CHOICE: {
        if (v >= 0 && v < n_choices(f)) return SS_OK;
        char choices[256];
        ss_field_label(label, sizeof label, kind, f);
        ss_format_choices(choices, sizeof choices, f);
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s: unknown %s %.0f (choose from %s)", label, f->name, v, choices);
    }
    case SS_FIELD_IDS: {
        const int32_t *ids = *(const int32_t *const *)cmember(config, f->offset);
        ss_field_label(label, sizeof label, kind, f);
        if (v < 0 || (v > 0 && !ids)) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s: %.0f ids but no array", label, v);
        for (int i = 0; i < (int)v; i++)
            if (!ss_field_in_range(f, ids[i]))
                return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s: token id %d at index %d is outside [%.0f, %.0f]", label,
                               ids[i], i, f->min, f->max);
        return SS_OK;
    }
    default:
        return ss_field_in_range(f, v) ? SS_OK : ss_field_range_error(kind, f, v, err);
    }
}

ss_status ss_config_check(ss_config_kind kind, const void *config, ss_error *err) {
    const ss_config_schema *s = ss_config_schema_of(kind);
    if (!s || !config) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unknown configuration kind %d", (int)kind);
    for (int i = 0; i < s->n_fields; i++) {
        ss_status st = check_field(kind, &s->fields[i], config, err);
        if (st != SS_OK) return st;
    }
    switch (kind) {
    case SS_CONFIG_MODEL: return ss_model_config_rules(config, err);
    case SS_CONFIG_CACHE: return ss_cache_config_rules(config, err);
    case SS_CONFIG_SPECULATIVE: return ss_speculative_rules(config, err);
    case SS_CONFIG_SAMPLING: return ss_sampling_rules(config, err);
    default: return SS_OK;
    }
}
