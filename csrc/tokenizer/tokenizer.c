/* Building a tokenizer from its vocabulary, merges and added tokens, and
 * encoding text: added tokens, then pre-tokenization, then BPE per word. */
#include <stdlib.h>
#include <string.h>

#include "bytelevel.h"
#include "common.h"
#include "pretokenize.h"
#include "tokenizer_impl.h"
#include "utf8.h"
#include "wordcache.h"

/* ------------------------------------------------------------- building */

static ss_status check_config(const ss_tokenizer_config *c, ss_error *err) {
    if (c->n_vocab_ids < 0 || c->n_merges < 0 || c->n_added < 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "negative count (vocab %d, merges %d, added %d)",
                       c->n_vocab_ids, c->n_merges, c->n_added);
    if (c->n_vocab_ids > 0 && !c->vocab_offsets)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "vocab_offsets is NULL");
    if (c->n_merges > 0 && !c->merges) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "merges is NULL");
    if (c->n_added > 0 && !c->added) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "added is NULL");
    if (c->n_vocab_ids > 0) {
        if (c->vocab_offsets[0] != 0) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "vocab_offsets[0] is not 0");
        for (int32_t i = 0; i < c->n_vocab_ids; i++)
            if (c->vocab_offsets[i + 1] < c->vocab_offsets[i])
                return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "vocab_offsets decrease after id %d", i);
        if (c->vocab_offsets[c->n_vocab_ids] > 0 && !c->vocab_data)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "vocab_data is NULL");
    }
    /* Added tokens beyond the vocabulary take the next free ids, so the id
     * space cannot exceed vocabulary + added tokens; bounding it here keeps
     * a bad id from allocating gigabytes. */
    int64_t id_limit = (int64_t)c->n_vocab_ids + c->n_added;
    for (int32_t t = 0; t < c->n_added; t++) {
        const ss_added_token *a = &c->added[t];
        if (!a->content || a->content_len == 0)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "added token %d has empty content", t);
        if (a->pattern && a->pattern_len == 0)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "added token %d has an empty pattern", t);
        if (a->id < 0 || a->id >= id_limit)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "added token %d has id %d, outside [0, %lld)", t, a->id,
                           (long long)id_limit);
    }
    if (c->unk_id < -1 || c->unk_id >= c->n_vocab_ids ||
        (c->unk_id >= 0 && c->vocab_offsets[c->unk_id + 1] == c->vocab_offsets[c->unk_id]))
        return ss_fail(err, SS_ERR_OUT_OF_RANGE, "unk_id %d is not a vocabulary token", c->unk_id);
    return SS_OK;
}

static inline size_t vocab_len(const ss_tokenizer_config *c, int32_t id) {
    return (size_t)(c->vocab_offsets[id + 1] - c->vocab_offsets[id]);
}

static inline const char *vocab_str(const ss_tokenizer_config *c, int32_t id) {
    return c->vocab_data + c->vocab_offsets[id];
}

static ss_status check_merges(const ss_tokenizer_config *c, ss_error *err) {
    for (int32_t r = 0; r < c->n_merges; r++) {
        const int32_t *row = c->merges + 3 * (size_t)r;
        for (int k = 0; k < 3; k++)
            if (row[k] < 0 || row[k] >= c->n_vocab_ids || vocab_len(c, row[k]) == 0)
                return ss_fail(err, SS_ERR_OUT_OF_RANGE, "merge %d names id %d, which is not in the vocabulary", r,
                               row[k]);
        size_t la = vocab_len(c, row[0]), lb = vocab_len(c, row[1]);
        if (vocab_len(c, row[2]) != la + lb || memcmp(vocab_str(c, row[2]), vocab_str(c, row[0]), la) != 0 ||
            memcmp(vocab_str(c, row[2]) + la, vocab_str(c, row[1]), lb) != 0)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "merge %d: token %d is not the concatenation of tokens %d and %d", r, row[2], row[0],
                           row[1]);
    }
    return SS_OK;
}

/* Decides what each id is (vocabulary or added token), and what it decodes
 * to: the bytes its byte-level characters stand for, or, when some character
 * is outside the alphabet (added tokens such as runs of plain spaces), its
 * UTF-8 as is -- Hugging Face's ByteLevel decoder does the same. Sets
 * alphabet[id] for vocabulary tokens written in the alphabet: only those
 * can come out of BPE. */
static ss_status build_ids(ss_tokenizer *tok, const ss_tokenizer_config *c, uint8_t *alphabet, ss_error *err) {
    int32_t n = tok->n_ids;
    const char **src = calloc((size_t)n, sizeof *src);
    size_t *len = calloc((size_t)n, sizeof *len);
    if (!src || !len) {
        free(src);
        free(len);
        return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for %d ids", n);
    }
    ss_status st = SS_OK;
    for (int32_t i = 0; i < c->n_vocab_ids; i++) {
        src[i] = vocab_str(c, i);
        len[i] = vocab_len(c, i);
    }
    for (int32_t t = 0; t < c->n_added && st == SS_OK; t++) {
        const ss_added_token *a = &c->added[t];
        if (len[a->id] == 0) {
            src[a->id] = a->content;
            len[a->id] = a->content_len;
        } else if (len[a->id] != a->content_len || memcmp(src[a->id], a->content, a->content_len) != 0) {
            st = ss_fail(err, SS_ERR_INVALID_ARGUMENT, "added token %d ('%.*s') has id %d, which belongs to '%.*s'",
                         t, (int)(a->content_len > 64 ? 64 : a->content_len), a->content, a->id,
                         (int)(len[a->id] > 64 ? 64 : len[a->id]), src[a->id]);
        }
        if (a->special) tok->id_flags[a->id] |= TOK_ID_SPECIAL;
    }
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) total += len[i];
    tok->bytes = malloc(total ? total : 1);
    if (st == SS_OK && !tok->bytes) st = ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for the vocabulary");
    size_t at = 0;
    for (int32_t i = 0; i < n && st == SS_OK; i++) {
        tok->offsets[i] = (int64_t)at;
        if (len[i] == 0) continue;
        tok->id_flags[i] |= TOK_ID_PRESENT;
        ptrdiff_t k = tok_bytelevel_decode((const uint8_t *)src[i], len[i], tok->bytes + at);
        if (k >= 0) {
            if (i < c->n_vocab_ids && vocab_len(c, i) > 0) alphabet[i] = 1;
            at += (size_t)k;
        } else {
            memcpy(tok->bytes + at, src[i], len[i]);
            at += len[i];
        }
    }
    tok->offsets[n] = (int64_t)at;
    free(src);
    free(len);
    return st;
}

/* The word map: every vocabulary token when ignore_merges (Hugging Face
 * then looks whole words up before merging), else only the tokens that BPE
 * rebuilds from their own bytes, for which the lookup is a pure shortcut. */
static ss_status build_words(ss_tokenizer *tok, const ss_tokenizer_config *c, const uint8_t *alphabet,
                             ss_error *err) {
    ss_status st = tok_wordmap_init(&tok->words, (size_t)c->n_vocab_ids, tok->bytes, tok->offsets, err);
    if (st != SS_OK || c->ignore_merges) {
        for (int32_t i = 0; st == SS_OK && i < c->n_vocab_ids; i++)
            if (alphabet[i]) tok_wordmap_add(&tok->words, i);
        return st;
    }
    tok_ids ids = {0};
    tok_bpe_scratch scratch = {0};
    for (int32_t i = 0; st == SS_OK && i < c->n_vocab_ids; i++) {
        if (!alphabet[i]) continue;
        ids.len = 0;
        st = tok_bpe_word(&tok->bpe, &scratch, tok->bytes + tok->offsets[i],
                          (size_t)(tok->offsets[i + 1] - tok->offsets[i]), &ids, err);
        if (st == SS_OK && ids.len == 1 && ids.data[0] == i) tok_wordmap_add(&tok->words, i);
    }
    free(ids.data);
    tok_bpe_scratch_free(&scratch);
    return st;
}

ss_status ss_tokenizer_create(const ss_tokenizer_config *c, ss_tokenizer **out, ss_error *err) {
    if (!c || !out) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "config and out must not be NULL");
    *out = NULL;
    ss_status st = check_config(c, err);
    if (st != SS_OK) return st;
    if ((st = check_merges(c, err)) != SS_OK) return st;

    ss_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for the tokenizer");
    tok->n_ids = c->n_vocab_ids;
    for (int32_t t = 0; t < c->n_added; t++)
        if (c->added[t].id >= tok->n_ids) tok->n_ids = c->added[t].id + 1;
    tok->add_prefix_space = !!c->add_prefix_space;
    tok->use_regex = !!c->use_regex;
    tok->id_flags = calloc((size_t)tok->n_ids + 1, 1);
    tok->offsets = calloc((size_t)tok->n_ids + 1, sizeof(int64_t));
    uint8_t *alphabet = calloc((size_t)tok->n_ids + 1, 1);
    if (!tok->id_flags || !tok->offsets || !alphabet) {
        st = ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for %d ids", tok->n_ids);
        goto done;
    }
    if ((st = build_ids(tok, c, alphabet, err)) != SS_OK) goto done;

    /* Initial BPE symbols: the vocabulary token of each single byte. */
    tok->bpe.unk_id = c->unk_id;
    tok->bpe.fuse_unk = !!c->fuse_unk;
    for (int b = 0; b < 256; b++) tok->bpe.byte_id[b] = -1;
    for (int32_t i = 0; i < c->n_vocab_ids; i++)
        if (alphabet[i] && tok->offsets[i + 1] - tok->offsets[i] == 1) tok->bpe.byte_id[tok->bytes[tok->offsets[i]]] = i;
    if ((st = tok_bpe_init_merges(&tok->bpe, c->merges, c->n_merges, err)) != SS_OK) goto done;
    if ((st = build_words(tok, c, alphabet, err)) != SS_OK) goto done;
    if ((st = tok_added_init(&tok->raw, c->added, c->n_added, 0, err)) != SS_OK) goto done;
    if ((st = tok_added_init(&tok->normalized, c->added, c->n_added, 1, err)) != SS_OK) goto done;
done:
    free(alphabet);
    if (st != SS_OK) {
        ss_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return SS_OK;
}

void ss_tokenizer_free(ss_tokenizer *tok) {
    if (!tok) return;
    free(tok->bytes);
    free(tok->offsets);
    free(tok->id_flags);
    tok_bpe_free(&tok->bpe);
    tok_wordmap_free(&tok->words);
    tok_added_free(&tok->raw);
    tok_added_free(&tok->normalized);
    free(tok);
}

int32_t ss_tokenizer_n_ids(const ss_tokenizer *tok) { return tok->n_ids; }

ss_status ss_tokenizer_token_bytes(const ss_tokenizer *tok, int32_t id, const char **bytes, size_t *len,
                                   ss_error *err) {
    if (!tok_id_ok(tok, id))
        return ss_fail(err, SS_ERR_OUT_OF_RANGE, "token id %d is not in the vocabulary (ids 0..%d)", id, tok->n_ids - 1);
    *bytes = (const char *)tok->bytes + tok->offsets[id];
    *len = (size_t)(tok->offsets[id + 1] - tok->offsets[id]);
    return SS_OK;
}

int ss_tokenizer_is_special(const ss_tokenizer *tok, int32_t id) {
    return tok_id_ok(tok, id) && (tok->id_flags[id] & TOK_ID_SPECIAL);
}

/* ------------------------------------------------------------- encoding */

typedef struct {
    const ss_tokenizer *tok;
    unsigned flags;
    tok_ids out;
    tok_bpe_scratch scratch;
    tok_buf prefixed; /* a piece with a space put in front (add_prefix_space) */
    tok_wordcache cache;
    ss_error *err;
} encoder;

static ss_status push_id(encoder *e, int32_t id) {
    if (tok_ids_push(&e->out, id) != 0) return ss_fail(e->err, SS_ERR_NO_MEMORY, "out of memory for token ids");
    return SS_OK;
}

static ss_status encode_word(encoder *e, const uint8_t *w, size_t n) {
    int32_t id = tok_wordmap_find(&e->tok->words, w, n);
    if (id >= 0) return push_id(e, id);
    size_t n_hit;
    const int32_t *hit = tok_wordcache_find(&e->cache, w, n, &n_hit);
    if (hit) {
        for (size_t i = 0; i < n_hit; i++)
            if (push_id(e, hit[i]) != SS_OK) return SS_ERR_NO_MEMORY;
        return SS_OK;
    }
    size_t before = e->out.len;
    ss_status st = tok_bpe_word(&e->tok->bpe, &e->scratch, w, n, &e->out, e->err);
    if (st == SS_OK && e->out.len > before)
        tok_wordcache_add(&e->cache, w, n, e->out.data + before, e->out.len - before);
    return st;
}

/* Text between added tokens: pre-tokenize, then BPE each word. */
static ss_status encode_text(encoder *e, const uint8_t *s, size_t n) {
    if (n == 0) return SS_OK;
    if (e->tok->add_prefix_space && s[0] != ' ') {
        e->prefixed.len = 0;
        if (n == SIZE_MAX || tok_buf_reserve(&e->prefixed, n + 1) != 0)
            return ss_fail(e->err, SS_ERR_NO_MEMORY, "out of memory for a piece of %zu bytes", n);
        e->prefixed.data[0] = ' ';
        memcpy(e->prefixed.data + 1, s, n);
        s = e->prefixed.data;
        n++;
    }
    if (!e->tok->use_regex) return encode_word(e, s, n);
    for (size_t pos = 0; pos < n;) {
        size_t end = tok_pretokenize_next(s, n, pos);
        ss_status st = encode_word(e, s + pos, end - pos);
        if (st != SS_OK) return st;
        pos = end;
    }
    return SS_OK;
}

static ss_status on_normalized_piece(void *ctx, const uint8_t *s, size_t start, size_t end, int32_t id) {
    encoder *e = ctx;
    return id >= 0 ? push_id(e, id) : encode_text(e, s + start, end - start);
}

static ss_status on_raw_piece(void *ctx, const uint8_t *s, size_t start, size_t end, int32_t id) {
    encoder *e = ctx;
    if (id >= 0) return push_id(e, id);
    if (e->flags & SS_TOK_MATCH_NORMALIZED)
        return tok_added_split(&e->tok->normalized, s + start, end - start, on_normalized_piece, e);
    return encode_text(e, s + start, end - start);
}

ss_status ss_tokenizer_encode(const ss_tokenizer *tok, const char *text, size_t len, unsigned flags, int32_t **ids,
                              size_t *n_ids, ss_error *err) {
    if (!tok || !ids || !n_ids || (!text && len > 0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "tokenizer, text, ids and n_ids must not be NULL");
    *ids = NULL;
    *n_ids = 0;
    encoder e = {.tok = tok, .flags = flags, .err = err};
    const uint8_t *s = (const uint8_t *)text;
    ss_status st = (flags & SS_TOK_MATCH_RAW) ? tok_added_split(&tok->raw, s, len, on_raw_piece, &e)
                                              : on_raw_piece(&e, s, 0, len, -1);
    tok_bpe_scratch_free(&e.scratch);
    tok_wordcache_free(&e.cache);
    free(e.prefixed.data);
    if (st != SS_OK) {
        free(e.out.data);
        return st;
    }
    *ids = e.out.data;
    *n_ids = e.out.len;
    return SS_OK;
}

/* ------------------------------------------------------------ splitting */

typedef struct {
    ss_token_span *spans;
    size_t n, cap;
    int any_token;
} span_list;

static ss_status on_span(void *ctx, const uint8_t *s, size_t start, size_t end, int32_t id) {
    (void)s;
    span_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        ss_token_span *p = realloc(l->spans, cap * sizeof *p);
        if (!p) return SS_ERR_NO_MEMORY;
        l->spans = p;
        l->cap = cap;
    }
    l->spans[l->n++] = (ss_token_span){start, end, id};
    l->any_token |= id >= 0;
    return SS_OK;
}

ss_status ss_tokenizer_split_added(const ss_tokenizer *tok, const char *text, size_t len, ss_token_span **spans,
                                   size_t *n_spans, ss_error *err) {
    if (!tok || !spans || !n_spans || (!text && len > 0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "tokenizer, text, spans and n_spans must not be NULL");
    span_list l = {0};
    ss_status st = tok_added_split(&tok->raw, (const uint8_t *)text, len, on_span, &l);
    if (st != SS_OK || !l.any_token) {
        free(l.spans);
        l.spans = NULL;
        l.n = 0;
    }
    *spans = l.spans;
    *n_spans = l.n;
    if (st != SS_OK) return ss_fail(err, st, "out of memory splitting %zu bytes on added tokens", len);
    return SS_OK;
}

ss_status ss_pretokenize(const char *text, size_t len, size_t **ends, size_t *n_words, ss_error *err) {
    if (!ends || !n_words || (!text && len > 0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "text, ends and n_words must not be NULL");
    *ends = NULL;
    *n_words = 0;
    /* Every word is at least one byte. */
    size_t *out = malloc((len ? len : 1) * sizeof *out);
    if (!out) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory pre-tokenizing %zu bytes", len);
    size_t n = 0;
    for (size_t pos = 0; pos < len; pos = out[n - 1]) out[n++] = tok_pretokenize_next((const uint8_t *)text, len, pos);
    *ends = out;
    *n_words = n;
    return SS_OK;
}
