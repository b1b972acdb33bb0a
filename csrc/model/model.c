/* Building a model from borrowed weight tensors: validation of the config and
 * of every shape, and conversion to the storage dtype where needed. */
#include "model/model.h"
#include "model/backend.h"

#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "kernels/cpu/kernels.h"

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
    if (t->dtype != SS_F32 && t->dtype != SS_F16 && t->dtype != SS_BF16)
        return ss_fail(err, SS_ERR_SHAPE, "tensor %s has an unsupported dtype (%d)", name, (int)t->dtype);
    if (t->rows != rows || t->cols != cols)
        return ss_fail(err, SS_ERR_SHAPE, "tensor %s has shape [%lld, %lld], config implies [%lld, %lld]",
                       name, (long long)t->rows, (long long)t->cols, (long long)rows, (long long)cols);
    return SS_OK;
}

/* A weight matrix in the storage dtype: borrowed when it already is, else a
 * converted copy owned by the model. */
static ss_status take_matrix(ss_model *m, const ss_tensor *t, int64_t rows, int64_t cols,
                             const char *name, const void **out, ss_error *err) {
    ss_status st = check_shape(t, rows, cols, name, err);
    if (st != SS_OK) return st;
    if (t->dtype == m->wtype) {
        *out = t->data;
        return SS_OK;
    }
    if (m->wtype == SS_I8) { /* quantized at load, per output row */
        const size_t bytes = ss_matrix_bytes(SS_I8, rows, cols);
        void *dst = ss_alloc(bytes, 1);
        if (!track(m, dst) || ss_quantize_i8(dst, t->data, t->dtype, rows, cols) != 0)
            return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %zu bytes to quantize %s", bytes, name);
        *out = dst;
        return SS_OK;
    }
    const size_t n = (size_t)rows * (size_t)cols;
    void *dst = ss_alloc(n, ss_dtype_size(m->wtype));
    float *row = ss_alloc((size_t)cols, sizeof(float));
    if (!track(m, dst) || !row) {
        ss_free(row);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %zu bytes to convert %s",
                       n * ss_dtype_size(m->wtype), name);
    }
    const size_t in_row = (size_t)cols * ss_dtype_size(t->dtype), out_row = (size_t)cols * ss_dtype_size(m->wtype);
    for (int64_t r = 0; r < rows; r++) {
        ss_convert_to_f32(row, (const char *)t->data + (size_t)r * in_row, t->dtype, (size_t)cols);
        ss_convert_from_f32((char *)dst + (size_t)r * out_row, row, m->wtype, (size_t)cols);
    }
    ss_free(row);
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

static ss_status check_config(const ss_model_config *c, ss_error *err) {
    if (c->n_layer < 1 || c->d_model < 1 || c->n_head < 1 || c->d_ff < 1 || c->vocab_rows < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "model config sizes must be positive (n_layer=%d d_model=%d n_head=%d d_ff=%d vocab=%d)",
                       c->n_layer, c->d_model, c->n_head, c->d_ff, c->vocab_rows);
    if (c->d_model % c->n_head != 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "d_model %d is not divisible by n_head %d",
                       c->d_model, c->n_head);
    const int hd = c->d_model / c->n_head;
    if (c->rotary_dim < 0 || c->rotary_dim > hd || c->rotary_dim % 2 != 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "rotary_dim %d must be even and in [0, head_dim=%d]",
                       c->rotary_dim, hd);
    if (!(c->rotary_base > 0.0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "rotary_base must be positive");
    if (!(c->layer_norm_eps > 0.0f))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "layer_norm_eps must be positive");
    return SS_OK;
}

ss_status ss_model_create(const ss_model_config *config, const ss_weights *w, ss_dtype weight_dtype,
                          ss_model **out, ss_error *err) {
    *out = NULL;
    ss_status st = check_config(config, err);
    if (st != SS_OK) return st;
    if (weight_dtype != SS_F32 && weight_dtype != SS_F16 && weight_dtype != SS_BF16 && weight_dtype != SS_I8)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unsupported weight dtype %d", (int)weight_dtype);
    if (!w || !w->layers) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "weights are missing");
    ss_model *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the model");
    m->cfg = *config;
    m->wtype = weight_dtype;
    m->head_dim = config->d_model / config->n_head;
    const int64_t d = config->d_model, ff = config->d_ff, V = config->vocab_rows;
    m->layers = calloc((size_t)config->n_layer, sizeof *m->layers);
    if (!m->layers) {
        ss_model_free(m);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the model");
    }
    char name[160];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
#define TRY(call)                  \
    do {                           \
        st = (call);               \
        if (st != SS_OK) goto fail; \
    } while (0)
    if (weight_dtype == SS_I8) { /* embed_in stays as given: borrowed, one row per token */
        TRY(check_shape(&w->embed_in, V, d, "gpt_neox.embed_in.weight", err));
        m->embed_in = w->embed_in.data;
        m->etype = w->embed_in.dtype;
    } else {
        m->etype = weight_dtype;
        TRY(take_matrix(m, &w->embed_in, V, d, "gpt_neox.embed_in.weight", &m->embed_in, err));
    }
    TRY(take_matrix(m, &w->embed_out, V, d, "embed_out.weight", &m->embed_out, err));
    TRY(take_vector(m, &w->final_ln_w, d, "gpt_neox.final_layer_norm.weight", &m->lnf_w, err));
    TRY(take_vector(m, &w->final_ln_b, d, "gpt_neox.final_layer_norm.bias", &m->lnf_b, err));
    for (int i = 0; i < config->n_layer; i++) {
        const ss_layer_weights *src = &w->layers[i];
        ss_layer *L = &m->layers[i];
        const char *p = "gpt_neox.layers";
        TRY(take_vector(m, &src->ln1_w, d, NAME("%s.%d.input_layernorm.weight", p, i), &L->ln1_w, err));
        TRY(take_vector(m, &src->ln1_b, d, NAME("%s.%d.input_layernorm.bias", p, i), &L->ln1_b, err));
        TRY(take_vector(m, &src->ln2_w, d, NAME("%s.%d.post_attention_layernorm.weight", p, i), &L->ln2_w, err));
        TRY(take_vector(m, &src->ln2_b, d, NAME("%s.%d.post_attention_layernorm.bias", p, i), &L->ln2_b, err));
        TRY(take_matrix(m, &src->qkv_w, 3 * d, d, NAME("%s.%d.attention.query_key_value.weight", p, i), &L->qkv_w, err));
        TRY(take_vector(m, &src->qkv_b, 3 * d, NAME("%s.%d.attention.query_key_value.bias", p, i), &L->qkv_b, err));
        TRY(take_matrix(m, &src->out_w, d, d, NAME("%s.%d.attention.dense.weight", p, i), &L->out_w, err));
        TRY(take_vector(m, &src->out_b, d, NAME("%s.%d.attention.dense.bias", p, i), &L->out_b, err));
        TRY(take_matrix(m, &src->fc1_w, ff, d, NAME("%s.%d.mlp.dense_h_to_4h.weight", p, i), &L->fc1_w, err));
        TRY(take_vector(m, &src->fc1_b, ff, NAME("%s.%d.mlp.dense_h_to_4h.bias", p, i), &L->fc1_b, err));
        TRY(take_matrix(m, &src->fc2_w, d, ff, NAME("%s.%d.mlp.dense_4h_to_h.weight", p, i), &L->fc2_w, err));
        TRY(take_vector(m, &src->fc2_b, d, NAME("%s.%d.mlp.dense_4h_to_h.bias", p, i), &L->fc2_b, err));
    }
#undef TRY
#undef NAME
    *out = m;
    return SS_OK;
fail:
    ss_model_free(m);
    return st;
}

ss_status ss_model_set_device(ss_model *m, int device, ss_error *err) {
    if (device == m->device) return SS_OK;
    if (device == SS_DEVICE_CPU) {
        ss_cuda_model_release(m);
        m->device = SS_DEVICE_CPU;
        return SS_OK;
    }
    if (device != SS_DEVICE_CUDA) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unknown device %d", device);
    if (m->wtype == SS_I8)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "int8 weights run on the CPU only (load with f32, f16 or bf16 for CUDA)");
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
    const ss_dtype wt = m->wtype;
    const size_t per_layer = ss_matrix_bytes(wt, 3 * d, d) + ss_matrix_bytes(wt, d, d) + ss_matrix_bytes(wt, ff, d) +
                             ss_matrix_bytes(wt, d, ff) + (3 * d + 6 * d + ff) * sizeof(float);
    /* embed_out, one row of embed_in, the final norm */
    return (size_t)m->cfg.n_layer * per_layer + ss_matrix_bytes(wt, V, d) + d * ss_dtype_size(m->etype) +
           2 * d * sizeof(float);
}
