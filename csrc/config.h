/* Internal side of the configuration schemas (specstream.h declares the
 * public one): field access for bindings, messages, and the rules that tie
 * fields together, each defined by the module that owns the struct. */
#ifndef SS_CONFIG_H
#define SS_CONFIG_H

#include <stddef.h>

#include "specstream.h"

/* A field by name, or NULL. */
const ss_field *ss_config_field(ss_config_kind kind, const char *name);
/* A field's value as a double (IDS: the count) / set from one (IDS: empty). */
double ss_field_get(const ss_field *f, const void *config);
void ss_field_set(const ss_field *f, void *config, double value);
/* Whether a value is valid for the field: within [min, max] (bounds open
 * as declared), or that or a special value. */
int ss_field_in_limits(const ss_field *f, double value);
int ss_field_in_range(const ss_field *f, double value);
/* Looks up a special value by name ("None", "measured"); 1 if found. */
int ss_field_special(const ss_field *f, const char *name, double *value);

/* "CacheConfig.window" (or the bare name for unnamed schemas). */
void ss_field_label(char *buf, size_t size, ss_config_kind kind, const ss_field *f);
/* A number as Python prints it for the field's type ("4", "0.5", "1.0", "nan"). */
void ss_format_number(char *buf, size_t size, double v, ss_field_type type);
/* "full, window, streaming" */
void ss_format_choices(char *buf, size_t size, const ss_field *f);
/* The message for a value outside the field's range. */
ss_status ss_field_range_error(ss_config_kind kind, const ss_field *f, double value, ss_error *err);

/* Rules beyond each field's own limits (called by ss_config_check once the
 * fields are in range). */
ss_status ss_model_config_rules(const ss_model_config *c, ss_error *err);   /* model/model.c   */
ss_status ss_cache_config_rules(const ss_cache_config *c, ss_error *err);   /* cache/kv_cache.c */
ss_status ss_speculative_rules(const ss_speculative *s, ss_error *err);     /* spec/generate.c  */
ss_status ss_sampling_rules(const ss_sampling *s, ss_error *err);           /* spec/sampling.c  */

#endif
