/* Building a model from borrowed weight tensors: validation of the config and
 * of every shape, and conversion to the storage dtype where needed. */
#include "model/model.h"
#include "model/backend.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "config.h"
#include "kernels/cpu/formats.h"

static int track(ss_model *m, void *p) {
    if (!p) return 0;
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **grown = realloc(m->owned, cap * sizeof *grown);
        if (!grown) {
            ss_free(p);
            return 0;
        }
        m->owned = grown;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 1;
}

static ss_status check_shape(const ss_tensor *t, int64_t rows, int64_t cols, const char *name,
                             ss_error *err) {
    if (!t->data) return ss_fail(err, SS_ERR_SHAPE, "tensor %s is missing", name);
    const ss_format *f = ss_format_of(t->dtype);
    if (!f || !f->checkpoint)
        return ss_fail(err, SS_ERR_SHAPE, "tensor %s has an unsupported dtype (%d)", name, (int)t->dtype);
    if (t->rows != rows || t->cols != cols)
        return ss_fail(err, SS_ERR_SHAPE, "tensor %s has shape [%lld, %lld], config implies [%lld, %lld]",
                       name, (long long)t->rows, (long long)t->cols, (long long)rows, (long long)cols);
    return SS_OK;
}

/* A weight matrix in the storage format: borrowed when it already is, else
 * packed (converted or quantized) into memory owned by the model. */
static ss_status take_matrix(ss_model *m, const ss_tensor *t, int64_t rows, int64_t cols,
                             const char *name, const void **out, ss_error *err) {
    ss_status st = check_shape(t, rows, cols, name, err);
    if (st != SS_OK) return st;
    if (t->dtype == m->wtype) {
        *out = t->data;
        return SS_OK;
    }
    const ss_format *f = ss_format_of(m->wtype);
    const size_t bytes = f->bytes(rows, cols);
    void *dst = ss_alloc_aligned(bytes);
    if (!track(m, dst) || f->pack(dst, t->data, t->dtype, rows, cols) != 0)
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %zu bytes to store %s as %s", bytes, name, f->name);
    *out = dst;
    return SS_OK;
}

/* Norm weights and biases are small: always an f32 copy. */
static ss_status take_vector(ss_model *m, const ss_tensor *t, int64_t len, const char *name,
                             float **out, ss_error *err) {
    ss_status st = check_shape(t, len, 1, name, err);
    if (st != SS_OK) return st;
    float *dst = ss_alloc((size_t)len, sizeof(float));
    if (!track(m, dst)) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %s", name);
    ss_convert_to_f32(dst, t->data, t->dtype, (size_t)len);
    *out = dst;
    return SS_OK;
}

ss_status ss_model_config_rules(const ss_model_config *c, ss_error *err) {
    if (c->d_model % c->n_head != 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "d_model %d is not divisible by n_head %d", c->d_model, c->n_head);
    const int hd = c->d_model / c->n_head;
    if (c->rotary_dim > hd || c->rotary_dim % 2 != 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "rotary_dim %d must be even and in [0, head_dim=%d]",
                       c->rotary_dim, hd);
    return SS_OK;
}

/* GPT_NEOX_TENSORS(X): X(scope, name, rows, cols, attention_bias, member).
 * scope LAYER: a tensor of every layer, named with its index; MODEL: one.
 * `member` names both the given ss_tensor (ss_layer_weights / ss_weights)
 * and where the model keeps it (ss_layer / ss_model). */
#define GPT_NEOX_TENSORS(X)                                                                             \
    X(MODEL, "gpt_neox.embed_in.weight", SS_DIM_VOCAB, SS_DIM_D, 0, embed_in)                         \
    X(LAYER, "gpt_neox.layers.%d.input_layernorm.weight", SS_DIM_D, SS_DIM_ONE, 0, ln1_w)             \
    X(LAYER, "gpt_neox.layers.%d.input_layernorm.bias", SS_DIM_D, SS_DIM_ONE, 0, ln1_b)               \
    X(LAYER, "gpt_neox.layers.%d.post_attention_layernorm.weight", SS_DIM_D, SS_DIM_ONE, 0, ln2_w)    \
    X(LAYER, "gpt_neox.layers.%d.post_attention_layernorm.bias", SS_DIM_D, SS_DIM_ONE, 0, ln2_b)      \
    X(LAYER, "gpt_neox.layers.%d.attention.query_key_value.weight", SS_DIM_3D, SS_DIM_D, 0, qkv_w)    \
    X(LAYER, "gpt_neox.layers.%d.attention.query_key_value.bias", SS_DIM_3D, SS_DIM_ONE, 1, qkv_b)    \
    X(LAYER, "gpt_neox.layers.%d.attention.dense.weight", SS_DIM_D, SS_DIM_D, 0, out_w)               \
    X(LAYER, "gpt_neox.layers.%d.attention.dense.bias", SS_DIM_D, SS_DIM_ONE, 1, out_b)               \
    X(LAYER, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", SS_DIM_FF, SS_DIM_D, 0, fc1_w)            \
    X(LAYER, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", SS_DIM_FF, SS_DIM_ONE, 0, fc1_b)            \
    X(LAYER, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", SS_DIM_D, SS_DIM_FF, 0, fc2_w)            \
    X(LAYER, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", SS_DIM_D, SS_DIM_ONE, 0, fc2_b)             \
    X(MODEL, "gpt_neox.final_layer_norm.weight", SS_DIM_D, SS_DIM_ONE, 0, final_ln_w)                 \
    X(MODEL, "gpt_neox.final_layer_norm.bias", SS_DIM_D, SS_DIM_ONE, 0, final_ln_b)                   \
    X(MODEL, "embed_out.weight", SS_DIM_VOCAB, SS_DIM_D, 0, embed_out)

#define PER_LAYER_LAYER 1
#define PER_LAYER_MODEL 0
#define GIVEN_LAYER ss_layer_weights
#define GIVEN_MODEL ss_weights
#define OWN_LAYER ss_layer
#define OWN_MODEL ss_model
#define SPEC(scope, name, rows, cols, bias, member) \
    {name, PER_LAYER_##scope, rows, cols, bias, offsetof(GIVEN_##scope, member)},
#define OWN_OFFSET(scope, name, rows, cols, bias, member) offsetof(OWN_##scope, member),
static const ss_tensor_spec tensor_specs[] = {GPT_NEOX_TENSORS(SPEC)};
static const size_t own_offsets[] = {GPT_NEOX_TENSORS(OWN_OFFSET)};
#undef SPEC
#undef OWN_OFFSET

const ss_tensor_spec *ss_tensor_specs(int *count) {
    *count = (int)(sizeof tensor_specs / sizeof tensor_specs[0]);
    return tensor_specs;
}

int64_t ss_dim_size(const ss_model_config *c, ss_dim dim) {
    switch (dim) {
    case SS_DIM_D: return c->d_model;
    case SS_DIM_3D: return 3 * (int64_t)c->d_model;
    case SS_DIM_FF: return c->d_ff;
    case SS_DIM_VOCAB: return c->vocab_rows;
    default: return 1;
    }
}

/* Tensor i of the table (of `layer`, for per-layer tensors) into the model:
 * matrices in the storage dtype, vectors as f32 copies. */
static ss_status take_tensor(ss_model *m, const ss_weights *w, int i, int layer, ss_error *err) {
    const ss_tensor_spec *t = &tensor_specs[i];
    char name[160];
    snprintf(name, sizeof name, t->name, layer);
    const char *given_base = t->per_layer ? (const char *)&w->layers[layer] : (const char *)w;
    const ss_tensor *given = (const ss_tensor *)(given_base + t->offset);
    char *own_base = t->per_layer ? (char *)&m->layers[layer] : (char *)m;
    void *slot = own_base + own_offsets[i];
    const int64_t rows = ss_dim_size(&m->cfg, t->rows), cols = ss_dim_size(&m->cfg, t->cols);
    if (t->cols == SS_DIM_ONE) return take_vector(m, given, rows, name, (float **)slot, err);
    if (ss_format_of(m->wtype)->scales != SS_SCALES_NONE && t->offset == offsetof(ss_weights, embed_in) &&
        !t->per_layer) {
        /* embed_in stays as given: borrowed, one row is read per token */
        ss_status st = check_shape(given, rows, cols, name, err);
        if (st != SS_OK) return st;
        m->embed_in = given->data;
        m->etype = given->dtype;
        return SS_OK;
    }
    return take_matrix(m, given, rows, cols, name, (const void **)slot, err);
}

ss_status ss_model_create(const ss_model_config *config, const ss_weights *w, ss_dtype weight_dtype,
                          ss_model **out, ss_error *err) {
    *out = NULL;
    ss_status st = ss_config_check(SS_CONFIG_MODEL, config, err);
    if (st != SS_OK) return st;
    if (!ss_format_of(weight_dtype))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unsupported weight dtype %d", (int)weight_dtype);
    if (!w || !w->layers) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "weights are missing");
    ss_model *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the model");
    m->cfg = *config;
    m->wtype = weight_dtype;
    m->etype = weight_dtype;
    m->head_dim = config->d_model / config->n_head;
    m->layers = calloc((size_t)config->n_layer, sizeof *m->layers);
    if (!m->layers) {
        ss_model_free(m);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the model");
    }
    const int n_specs = (int)(sizeof tensor_specs / sizeof tensor_specs[0]);
    for (int i = 0; i < n_specs && st == SS_OK; i++)
        if (!tensor_specs[i].per_layer) st = take_tensor(m, w, i, 0, err);
    for (int layer = 0; layer < config->n_layer && st == SS_OK; layer++)
        for (int i = 0; i < n_specs && st == SS_OK; i++)
            if (tensor_specs[i].per_layer) st = take_tensor(m, w, i, layer, err);
    if (st != SS_OK) {
        ss_model_free(m);
        return st;
    }
    *out = m;
    return SS_OK;
}

ss_status ss_model_set_device(ss_model *m, int device, ss_error *err) {
    if (device == m->device) return SS_OK;
    if (device == SS_DEVICE_CPU) {
        ss_cuda_model_release(m);
        m->device = SS_DEVICE_CPU;
        return SS_OK;
    }
    if (device != SS_DEVICE_CUDA) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unknown device %d", device);
    const ss_format *f = ss_format_of(m->wtype);
    if (!f->cuda)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "%s weights run on the CPU only (load with f32, f16 or bf16 for CUDA)",
                       f->name);
    if (ss_cuda_device_count() < 1)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "no CUDA GPU is available (or this build has no CUDA backend)");
    ss_status st = ss_cuda_model_init(m, err);
    if (st == SS_OK) m->device = SS_DEVICE_CUDA;
    return st;
}

int ss_model_get_device(const ss_model *m) { return m->device; }

int ss_cuda_available(void) { return ss_cuda_device_count(); }

void ss_model_free(ss_model *m) {
    if (!m) return;
    ss_cuda_model_release(m);
    for (size_t i = 0; i < m->n_owned; i++) ss_free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m);
}

const ss_model_config *ss_model_get_config(const ss_model *m) { return &m->cfg; }

size_t ss_model_weight_bytes(const ss_model *m) {
    const size_t d = (size_t)m->cfg.d_model, ff = (size_t)m->cfg.d_ff, V = (size_t)m->cfg.vocab_rows;
    size_t (*bytes)(int64_t, int64_t) = ss_format_of(m->wtype)->bytes;
    const size_t per_layer = bytes(3 * d, d) + bytes(d, d) + bytes(ff, d) + bytes(d, ff) + (3 * d + 6 * d + ff) * sizeof(float);
    /* embed_out, one row of embed_in, the final norm */
    return (size_t)m->cfg.n_layer * per_layer + bytes(V, d) + d * (size_t)ss_format_of(m->etype)->bits / 8 +
           2 * d * sizeof(float);
}
