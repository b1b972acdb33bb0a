/* Token ids back to text, all at once or one token at a time. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "tokenizer_impl.h"
#include "utf8.h"

static ss_status bad_id(const ss_tokenizer *tok, int32_t id, size_t at, ss_error *err) {
    return ss_fail(err, SS_ERR_OUT_OF_RANGE, "token id %d (at position %zu) is not in the vocabulary (ids 0..%d)", id,
                   at, tok->n_ids - 1);
}

static inline int skipped(const ss_tokenizer *tok, int32_t id, int skip_special) {
    return skip_special && (tok->id_flags[id] & TOK_ID_SPECIAL);
}

ss_status ss_tokenizer_decode(const ss_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **text,
                              size_t *len, ss_error *err) {
    if (!tok || !text || !len || (!ids && n > 0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "tokenizer, ids, text and len must not be NULL");
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!tok_id_ok(tok, ids[i])) return bad_id(tok, ids[i], i, err);
        if (!skipped(tok, ids[i], skip_special)) total += (size_t)(tok->offsets[ids[i] + 1] - tok->offsets[ids[i]]);
    }
    /* Concatenate first: a character may be split across tokens. */
    tok_buf raw = {0}, out = {0};
    if (tok_buf_reserve(&raw, total + 1) != 0) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory decoding %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        if (skipped(tok, ids[i], skip_special)) continue;
        size_t k = (size_t)(tok->offsets[ids[i] + 1] - tok->offsets[ids[i]]);
        memcpy(raw.data + raw.len, tok->bytes + tok->offsets[ids[i]], k);
        raw.len += k;
    }
    size_t used = tok_utf8_repair(&out, raw.data, raw.len, 1);
    free(raw.data);
    if (used == (size_t)-1 || tok_buf_reserve(&out, 1) != 0) {
        free(out.data);
        return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory decoding %zu ids", n);
    }
    out.data[out.len] = '\0';
    *text = (char *)out.data;
    *len = out.len;
    return SS_OK;
}

/* ------------------------------------------------------------ streaming */

struct ss_decode_stream {
    const ss_tokenizer *tok;
    int skip_special;
    uint8_t pending[4]; /* start of a character whose last bytes are still to come */
    size_t n_pending;
    tok_buf in, out;
};

ss_status ss_decode_stream_create(const ss_tokenizer *tok, int skip_special, ss_decode_stream **out, ss_error *err) {
    if (!tok || !out) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "tokenizer and out must not be NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for a decode stream");
    (*out)->tok = tok;
    (*out)->skip_special = !!skip_special;
    return SS_OK;
}

void ss_decode_stream_free(ss_decode_stream *s) {
    if (!s) return;
    free(s->in.data);
    free(s->out.data);
    free(s);
}

ss_status ss_decode_stream_push(ss_decode_stream *s, int32_t id, const char **text, size_t *len, ss_error *err) {
    *text = "";
    *len = 0;
    if (!tok_id_ok(s->tok, id)) return bad_id(s->tok, id, 0, err);
    if (skipped(s->tok, id, s->skip_special)) return SS_OK;
    size_t k = (size_t)(s->tok->offsets[id + 1] - s->tok->offsets[id]);
    s->in.len = 0;
    s->out.len = 0;
    if (tok_buf_reserve(&s->in, s->n_pending + k) != 0) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory");
    memcpy(s->in.data, s->pending, s->n_pending);
    memcpy(s->in.data + s->n_pending, s->tok->bytes + s->tok->offsets[id], k);
    s->in.len = s->n_pending + k;
    size_t used = tok_utf8_repair(&s->out, s->in.data, s->in.len, 0);
    if (used == (size_t)-1) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory");
    /* What is left is a proper prefix of one character: at most 3 bytes. */
    s->n_pending = s->in.len - used;
    memcpy(s->pending, s->in.data + used, s->n_pending);
    if (s->out.len) *text = (const char *)s->out.data;
    *len = s->out.len;
    return SS_OK;
}

void ss_decode_stream_flush(ss_decode_stream *s, const char **text, size_t *len) {
    /* A dangling prefix is one maximal ill-formed subpart: one U+FFFD. */
    static const char replacement[] = "\xEF\xBF\xBD";
    *text = s->n_pending ? replacement : "";
    *len = s->n_pending ? 3 : 0;
    s->n_pending = 0;
}
