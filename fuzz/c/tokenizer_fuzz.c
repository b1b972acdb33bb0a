/* libFuzzer harnesses of the C tokenizer (csrc/tokenizer/), built with
 * clang -fsanitize=fuzzer,address,undefined by fuzz/run.sh. One source, three
 * targets, chosen at compile time:
 *
 *   -DFUZZ_ENCODE   the input is text (arbitrary bytes, ill-formed UTF-8
 *                   included), encoded by a real tokenizer in several
 *                   configurations; the ids are decoded back.
 *   -DFUZZ_DECODE   the input is an array of token ids (little-endian
 *                   uint16, mapped onto [0, n_ids + 16): mostly valid ids,
 *                   some out of range), decoded at once and as a stream.
 *   -DFUZZ_CONFIG   the input describes a whole tokenizer (a small
 *                   vocabulary, merges, added tokens with every flag, and
 *                   corruptions of each) followed by text: the tokenizer is
 *                   built -- or rejected -- and, when built, the text is
 *                   encoded and decoded.
 *
 * The real tokenizer (ENCODE, DECODE) is read in LLVMFuzzerInitialize from the
 * file named by $SS_FUZZ_TOKENIZER, written by fuzz/c/dump_tokenizer.py from a
 * tokenizer.json (format there).
 *
 * Beyond "no crash, no leak, no undefined behaviour", every run checks the
 * documented contracts of tokenizer.h: encode gives at most len ids, each of
 * which names a token; decode succeeds on them and gives valid UTF-8 that is
 * NUL-terminated; pushing ids through a decode stream and flushing gives the
 * same text as decode; for the plain configuration, the ids' bytes are the
 * input's bytes minus those that have no token. A broken contract aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specstream.h"
#include "tokenizer/tokenizer.h"

#define MAYBE_UNUSED __attribute__((unused))

#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "tokenizer_fuzz: contract broken: %s: ", #cond);  \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* ------------------------------------------------------------ UTF-8 check */

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        size_t k;                   /* continuation bytes */
        unsigned lo = 0x80, hi = 0xBF; /* range of the first continuation */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c == 0xE0) {
            k = 2;
            lo = 0xA0;
        } else if (c == 0xED) {
            k = 2;
            hi = 0x9F;
        } else if (c >= 0xE1 && c <= 0xEF) {
            k = 2;
        } else if (c == 0xF0) {
            k = 3;
            lo = 0x90;
        } else if (c == 0xF4) {
            k = 3;
            hi = 0x8F;
        } else if (c >= 0xF1 && c <= 0xF3) {
            k = 3;
        } else {
            return 0;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n) return 0;
            const unsigned d = s[i + j];
            if (j == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
        }
        i += k + 1;
    }
    return 1;
}

/* ------------------------------------------------------- shared checks */

/* Decodes ids at once and as a stream; both must agree and be valid UTF-8.
 * all_valid: every id names a token (decode must succeed). */
static void check_decode(const ss_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, int all_valid) {
    ss_error err = {{0}};
    char *text = NULL;
    size_t len = 0;
    ss_status st = ss_tokenizer_decode(tok, ids, n, skip_special, &text, &len, &err);
    int any_bad = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t bl;
        ss_error e2 = {{0}};
        if (ss_tokenizer_token_bytes(tok, ids[i], &b, &bl, &e2) != SS_OK) any_bad = 1;
    }
    if (all_valid) REQUIRE(!any_bad, "an id from encode names no token");
    if (any_bad) {
        REQUIRE(st == SS_ERR_OUT_OF_RANGE, "decode of a bad id gave status %d", (int)st);
        REQUIRE(text == NULL, "failed decode returned text");
        REQUIRE(err.message[0] != '\0', "failed decode without a message");
    } else {
        REQUIRE(st == SS_OK, "decode failed: %s", err.message);
        REQUIRE(text != NULL && text[len] == '\0', "decode result not NUL-terminated");
        REQUIRE(valid_utf8((const unsigned char *)text, len), "decode gave ill-formed UTF-8");
    }

    ss_decode_stream *ds = NULL;
    REQUIRE(ss_decode_stream_create(tok, skip_special, &ds, &err) == SS_OK, "%s", err.message);
    char *acc = malloc(len + 4 * n + 8);
    size_t acc_len = 0;
    int stream_failed = 0;
    for (size_t i = 0; i < n; i++) {
        const char *piece;
        size_t pl;
        ss_status ps = ss_decode_stream_push(ds, ids[i], &piece, &pl, &err);
        if (ps != SS_OK) {
            REQUIRE(ps == SS_ERR_OUT_OF_RANGE, "decode stream push gave status %d", (int)ps);
            stream_failed = 1;
            continue; /* a bad id is skipped; the stream stays usable */
        }
        REQUIRE(valid_utf8((const unsigned char *)piece, pl), "decode stream gave ill-formed UTF-8");
        if (!any_bad) {
            REQUIRE(acc_len + pl <= len, "decode stream gave more text than decode");
            memcpy(acc + acc_len, piece, pl);
        }
        acc_len += pl;
    }
    const char *tail;
    size_t tl;
    ss_decode_stream_flush(ds, &tail, &tl);
    REQUIRE(valid_utf8((const unsigned char *)tail, tl), "flush gave ill-formed UTF-8");
    if (!any_bad) {
        REQUIRE(!stream_failed, "stream rejected an id that decode accepted");
        REQUIRE(acc_len + tl == len, "stream gave %zu bytes, decode %zu", acc_len + tl, len);
        memcpy(acc + acc_len, tail, tl);
        REQUIRE(memcmp(acc, text, len) == 0, "stream text differs from decode");
    }
    ss_decode_stream_free(ds);
    free(acc);
    free(text);
}

/* Encodes text with the given flags and checks the result (plain: the ids'
 * bytes must be the input's, less those known_byte says have no token), then
 * decodes the ids and splits the text on added tokens. */
MAYBE_UNUSED static void check_encode(const ss_tokenizer *tok, const uint8_t *text, size_t len, unsigned flags,
                         int prefix_space, int plain, const uint8_t *known_byte) {
    ss_error err = {{0}};
    int32_t *ids = NULL;
    size_t n = 0;
    ss_status st = ss_tokenizer_encode(tok, (const char *)text, len, flags, &ids, &n, &err);
    REQUIRE(st == SS_OK, "encode failed (status %d): %s", (int)st, err.message);
    /* At most one id per byte, as tokenizer.h says; a prefix space adds a
     * byte to each piece between added tokens. */
    REQUIRE(n <= (prefix_space ? 2 * len : len), "encode gave %zu ids for %zu bytes", n, len);
    if (plain) {
        /* The ids' bytes are the input minus the bytes that have no token. */
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            const char *b;
            size_t bl;
            REQUIRE(ss_tokenizer_token_bytes(tok, ids[i], &b, &bl, &err) == SS_OK, "%s", err.message);
            for (size_t j = 0; j < bl; j++) {
                while (at < len && !known_byte[text[at]]) at++;
                REQUIRE(at < len && (uint8_t)b[j] == text[at], "token %zu (id %d) byte %zu does not match input "
                        "byte %zu", i, ids[i], j, at);
                at++;
            }
        }
        while (at < len && !known_byte[text[at]]) at++;
        REQUIRE(at == len, "ids cover %zu of %zu input bytes", at, len);
    }
    check_decode(tok, ids, n, 0, 1);
    check_decode(tok, ids, n, 1, 1);
    free(ids);

    ss_token_span *spans = NULL;
    size_t n_spans = 0;
    REQUIRE(ss_tokenizer_split_added(tok, (const char *)text, len, &spans, &n_spans, &err) == SS_OK, "%s",
            err.message);
    size_t prev = 0;
    for (size_t i = 0; i < n_spans; i++) {
        REQUIRE(spans[i].start == prev && spans[i].end >= spans[i].start && spans[i].end <= len,
                "spans do not tile the text");
        prev = spans[i].end;
    }
    REQUIRE(n_spans == 0 || prev == len, "spans end at %zu of %zu", prev, len);
    free(spans);
}

MAYBE_UNUSED static void check_pretokenize(const uint8_t *text, size_t len) {
    size_t *ends = NULL, n = 0;
    ss_error err = {{0}};
    REQUIRE(ss_pretokenize((const char *)text, len, &ends, &n, &err) == SS_OK, "%s", err.message);
    size_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        REQUIRE(ends[i] > prev && ends[i] <= len, "word %zu ends at %zu (previous %zu, len %zu)", i, ends[i], prev,
                len);
        prev = ends[i];
    }
    REQUIRE(prev == len, "words end at %zu of %zu", prev, len);
    free(ends);
}

/* --------------------------------------------- the real tokenizer (file) */

#if defined(FUZZ_ENCODE) || defined(FUZZ_DECODE)

/* Dump format (little-endian), see dump_tokenizer.py:
 *   "SSTOK001"
 *   i32 n_vocab_ids, n_merges, n_added, unk_id, fuse_unk, add_prefix_space, use_regex, ignore_merges
 *   i64 offsets[n_vocab_ids + 1]; bytes data[offsets[n_vocab_ids]]
 *   i32 merges[3 * n_merges]
 *   n_added x { i32 id, special, normalized, lstrip, rstrip, single_word;
 *               u32 content_len; content; u32 pattern_len; pattern } */
typedef struct {
    const uint8_t *p, *end;
} reader;

static int32_t rd_i32(reader *r) {
    if (r->end - r->p < 4) { fprintf(stderr, "tokenizer dump truncated\n"); exit(2); }
    int32_t v;
    memcpy(&v, r->p, 4);
    r->p += 4;
    return v;
}

static const uint8_t *rd_bytes(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) { fprintf(stderr, "tokenizer dump truncated\n"); exit(2); }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

enum { N_VARIANTS = 4 };
static ss_tokenizer *variants[N_VARIANTS];
static int prefix_space[N_VARIANTS];
static int plain_ok; /* variant 0 drops unknown bytes (no unk_id) */
static uint8_t known_byte[256]; /* bytes that have a token (variant 0) */

static uint8_t *load_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s (set SS_FUZZ_TOKENIZER)\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("SS_FUZZ_TOKENIZER");
    size_t size;
    uint8_t *buf = load_file(path ? path : "tokenizer.bin", &size);
    reader r = {buf, buf + size};
    if (memcmp(rd_bytes(&r, 8), "SSTOK001", 8) != 0) { fprintf(stderr, "not a tokenizer dump\n"); exit(2); }
    ss_tokenizer_config c = {0};
    c.n_vocab_ids = rd_i32(&r);
    c.n_merges = rd_i32(&r);
    c.n_added = rd_i32(&r);
    c.unk_id = rd_i32(&r);
    c.fuse_unk = rd_i32(&r);
    c.add_prefix_space = rd_i32(&r);
    c.use_regex = rd_i32(&r);
    c.ignore_merges = rd_i32(&r);
    int64_t *offsets = malloc(((size_t)c.n_vocab_ids + 1) * sizeof(int64_t));
    memcpy(offsets, rd_bytes(&r, ((size_t)c.n_vocab_ids + 1) * 8), ((size_t)c.n_vocab_ids + 1) * 8);
    c.vocab_offsets = offsets;
    c.vocab_data = (const char *)rd_bytes(&r, (size_t)offsets[c.n_vocab_ids]);
    int32_t *merges = malloc((size_t)c.n_merges * 3 * sizeof(int32_t) + 1);
    memcpy(merges, rd_bytes(&r, (size_t)c.n_merges * 12), (size_t)c.n_merges * 12);
    c.merges = merges;
    /* Room for the extra added tokens of variant 3. */
    ss_added_token *added = calloc((size_t)c.n_added + 8, sizeof *added);
    for (int32_t i = 0; i < c.n_added; i++) {
        ss_added_token *a = &added[i];
        a->id = rd_i32(&r);
        a->special = rd_i32(&r);
        a->normalized = rd_i32(&r);
        a->lstrip = rd_i32(&r);
        a->rstrip = rd_i32(&r);
        a->single_word = rd_i32(&r);
        a->content_len = (size_t)(uint32_t)rd_i32(&r);
        a->content = (const char *)rd_bytes(&r, a->content_len);
        a->pattern_len = (size_t)(uint32_t)rd_i32(&r);
        a->pattern = (const char *)rd_bytes(&r, a->pattern_len);
        if (a->pattern_len == 0) a->pattern = NULL;
    }
    c.added = added;

    ss_error err = {{0}};
    /* 0: as in the file. */
    if (ss_tokenizer_create(&c, &variants[0], &err) != SS_OK) { fprintf(stderr, "variant 0: %s\n", err.message); exit(2); }
    /* 1: prefix space, whole words kept when they are tokens. */
    ss_tokenizer_config c1 = c;
    c1.add_prefix_space = !c.add_prefix_space;
    c1.ignore_merges = !c.ignore_merges;
    if (ss_tokenizer_create(&c1, &variants[1], &err) != SS_OK) { fprintf(stderr, "variant 1: %s\n", err.message); exit(2); }
    /* 2: no regex (each piece one word), unknown bytes become unk (fused). */
    ss_tokenizer_config c2 = c;
    c2.use_regex = 0;
    c2.unk_id = 0;
    c2.fuse_unk = 1;
    if (ss_tokenizer_create(&c2, &variants[2], &err) != SS_OK) { fprintf(stderr, "variant 2: %s\n", err.message); exit(2); }
    /* 3: extra added tokens with lstrip / rstrip / single_word / normalized. */
    static const struct { const char *s; int special, normalized, lstrip, rstrip, single_word; } extra[] = {
        {"<mask>", 1, 0, 1, 0, 0}, {"the", 0, 1, 0, 0, 1}, {" and ", 0, 1, 1, 1, 0},
        {"\xC3\xA9t\xC3\xA9", 0, 0, 0, 1, 1}, {"<|x|>", 1, 1, 1, 1, 1}, {"ab", 0, 0, 0, 0, 1},
    };
    int32_t n_ids = ss_tokenizer_n_ids(variants[0]);
    ss_tokenizer_config c3 = c;
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        ss_added_token *a = &added[c.n_added + i];
        a->content = extra[i].s;
        a->content_len = strlen(extra[i].s);
        a->pattern = NULL;
        a->pattern_len = 0;
        a->id = n_ids + (int32_t)i;
        a->special = extra[i].special;
        a->normalized = extra[i].normalized;
        a->lstrip = extra[i].lstrip;
        a->rstrip = extra[i].rstrip;
        a->single_word = extra[i].single_word;
    }
    c3.n_added = c.n_added + (int32_t)(sizeof extra / sizeof extra[0]);
    if (ss_tokenizer_create(&c3, &variants[3], &err) != SS_OK) { fprintf(stderr, "variant 3: %s\n", err.message); exit(2); }

    for (int b = 0; b < 256; b++) {
        uint8_t one = (uint8_t)b;
        int32_t *ids = NULL;
        size_t n = 0;
        /* A byte has a token iff encoding it alone (no added tokens) gives ids. */
        if (ss_tokenizer_encode(variants[0], (const char *)&one, 1, 0, &ids, &n, &err) == SS_OK && n > 0)
            known_byte[b] = 1;
        free(ids);
    }
    prefix_space[0] = c.add_prefix_space;
    prefix_space[1] = c1.add_prefix_space;
    prefix_space[2] = c2.add_prefix_space;
    prefix_space[3] = c3.add_prefix_space;
    plain_ok = c.unk_id < 0 && !c.add_prefix_space;
    /* The tokenizers copied what they need: the config may go. */
    free(offsets);
    free(merges);
    free(added);
    free(buf);
    return 0;
}
#endif

#ifdef FUZZ_ENCODE
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Raw added tokens only, normalized ones only, both, neither. */
    static const unsigned flag_sets[] = {SS_TOK_MATCH_ALL, SS_TOK_MATCH_RAW, SS_TOK_MATCH_NORMALIZED, 0};
    /* Variant 0 with every flag set: its plain check holds only when no
     * added token can match, i.e. without flags. */
    check_encode(variants[0], data, size, 0, prefix_space[0], plain_ok, known_byte);
    check_encode(variants[0], data, size, SS_TOK_MATCH_ALL, prefix_space[0], 0, NULL);
    for (int v = 1; v < N_VARIANTS; v++)
        check_encode(variants[v], data, size, flag_sets[(size + (size_t)v) % 4], prefix_space[v], 0, NULL);
    check_pretokenize(data, size);
    return 0;
}
#endif

#ifdef FUZZ_DECODE
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int skip_special = data[0] & 1;
    const int v = (data[0] >> 1) % N_VARIANTS;
    const ss_tokenizer *tok = variants[v];
    const int32_t n_ids = ss_tokenizer_n_ids(tok);
    size_t n = (size - 1) / 2;
    int32_t *ids = malloc(n * sizeof(int32_t) + 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)data[1 + 2 * i] | (uint32_t)data[2 + 2 * i] << 8;
        /* Every 0xFFxx word is a far-out id: negative or huge. */
        if ((u >> 8) == 0xFF) ids[i] = (u & 1) ? INT32_MIN + (int32_t)(u & 0xFE) : INT32_MAX - (int32_t)(u & 0xFE);
        else ids[i] = (int32_t)(u % (uint32_t)(n_ids + 16));
    }
    check_decode(tok, ids, n, skip_special, 0);
    for (size_t i = 0; i < n && i < 64; i++) {
        const char *b;
        size_t bl;
        ss_error err = {{0}};
        (void)ss_tokenizer_token_bytes(tok, ids[i], &b, &bl, &err);
        (void)ss_tokenizer_is_special(tok, ids[i]);
    }
    free(ids);
    return 0;
}
#endif

/* ------------------------------------------- tokenizers made from input */

#ifdef FUZZ_CONFIG
typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static unsigned take(input *in) { /* next byte, 0 when the input is used up */
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

/* Characters tokens are made of: byte-level alphabet letters ('a'-'d', 'Ġ'
 * for a space, 'Ċ' for a newline), a character outside the alphabet ('é'
 * as UTF-8 is, which decodes as itself) and a raw byte. */
static const char *const pieces[] = {"a", "b", "c", "d", "\xC4\xA0", "\xC4\x8A", "\xC3\xA9", "!", "1", "\xE2\x80\x99"};
enum { N_PIECES = sizeof pieces / sizeof pieces[0], MAX_VOCAB = 96, MAX_TOKEN = 48 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    input in = {data, size};
    char vocab[MAX_VOCAB][MAX_TOKEN];
    size_t vlen[MAX_VOCAB];
    int32_t n_vocab = 0;
    /* Single pieces first (an empty slot now and then: an id with no token). */
    const unsigned n_single = 1 + take(&in) % N_PIECES;
    for (unsigned i = 0; i < n_single; i++) {
        const unsigned sel = take(&in);
        if (sel == 0xFF) { vlen[n_vocab++] = 0; continue; }
        const char *p = pieces[(i + sel) % N_PIECES];
        vlen[n_vocab] = strlen(p);
        memcpy(vocab[n_vocab++], p, strlen(p));
    }
    /* Merges of existing tokens; each adds its result unless present. */
    int32_t merges[3 * 64];
    int32_t n_merges = 0;
    const unsigned want_merges = take(&in) % 64;
    for (unsigned m = 0; m < want_merges && n_vocab < MAX_VOCAB; m++) {
        int32_t a = (int32_t)(take(&in) % (unsigned)n_vocab), b = (int32_t)(take(&in) % (unsigned)n_vocab);
        const unsigned corrupt = take(&in);
        if (vlen[a] + vlen[b] > MAX_TOKEN) continue;
        char cat[MAX_TOKEN];
        memcpy(cat, vocab[a], vlen[a]);
        memcpy(cat + vlen[a], vocab[b], vlen[b]);
        size_t cl = vlen[a] + vlen[b];
        int32_t merged = -1;
        for (int32_t i = 0; i < n_vocab; i++)
            if (vlen[i] == cl && memcmp(vocab[i], cat, cl) == 0) merged = i;
        if (merged < 0) {
            memcpy(vocab[n_vocab], cat, cl);
            vlen[n_vocab] = cl;
            merged = n_vocab++;
        }
        merges[3 * n_merges] = a;
        merges[3 * n_merges + 1] = b;
        merges[3 * n_merges + 2] = merged;
        switch (corrupt) { /* rarely: an invalid row the builder must reject */
        case 0xF0: merges[3 * n_merges + 2] = a; break;
        case 0xF1: merges[3 * n_merges] = n_vocab; break;
        case 0xF2: merges[3 * n_merges + 1] = -1; break;
        case 0xF3: merges[3 * n_merges + 2] = INT32_MAX; break;
        default: break;
        }
        n_merges++;
    }
    char data_buf[MAX_VOCAB * MAX_TOKEN];
    int64_t offsets[MAX_VOCAB + 1];
    offsets[0] = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        memcpy(data_buf + offsets[i], vocab[i], vlen[i]);
        offsets[i + 1] = offsets[i] + (int64_t)vlen[i];
    }
    if (take(&in) == 0xF4 && n_vocab > 1) offsets[1] = offsets[2] + 1; /* decreasing offsets */

    /* Added tokens: content from the input, id from the vocabulary, the next
     * free id, or (rarely) anything. */
    ss_added_token added[8];
    char added_text[8][8];
    int32_t n_added = (int32_t)(take(&in) % 9);
    int32_t next_id = n_vocab;
    for (int32_t t = 0; t < n_added; t++) {
        ss_added_token *a = &added[t];
        const unsigned len = take(&in) % 8, flags = take(&in), idsel = take(&in);
        for (unsigned j = 0; j < len; j++) added_text[t][j] = (char)take(&in);
        a->content = added_text[t];
        a->content_len = len; /* 0: must be rejected */
        a->pattern = NULL;
        a->pattern_len = 0;
        if (flags & 0x40 && len > 1) { a->pattern = added_text[t] + 1; a->pattern_len = len - 1; }
        a->special = flags & 1;
        a->normalized = (flags >> 1) & 1;
        a->lstrip = (flags >> 2) & 1;
        a->rstrip = (flags >> 3) & 1;
        a->single_word = (flags >> 4) & 1;
        if (idsel < 0xF0) a->id = next_id++;
        else if (idsel < 0xF8 && n_vocab > 0) a->id = (int32_t)(idsel % (unsigned)n_vocab);
        else a->id = (int32_t)(idsel - 0xFC) * 1000; /* negative or far out */
    }
    const unsigned opts = take(&in);
    ss_tokenizer_config c = {
        .n_vocab_ids = n_vocab, .vocab_data = data_buf, .vocab_offsets = offsets,
        .n_merges = n_merges, .merges = merges, .n_added = n_added, .added = added,
        .unk_id = (opts & 1) ? (int32_t)((opts >> 4) % (unsigned)(n_vocab + 2)) - 1 : -1,
        .fuse_unk = (opts >> 1) & 1, .add_prefix_space = (opts >> 2) & 1, .use_regex = !((opts >> 3) & 1),
        .ignore_merges = (opts >> 7) & 1,
    };
    ss_tokenizer *tok = NULL;
    ss_error err = {{0}};
    ss_status st = ss_tokenizer_create(&c, &tok, &err);
    if (st != SS_OK) {
        REQUIRE(tok == NULL && err.message[0] != '\0', "failed create left a tokenizer or no message");
        return 0;
    }
    /* The rest of the input is text. */
    check_encode(tok, in.p, in.n, SS_TOK_MATCH_ALL, c.add_prefix_space, 0, NULL);
    check_encode(tok, in.p, in.n, SS_TOK_MATCH_NORMALIZED, c.add_prefix_space, 0, NULL);
    const int32_t n_ids = ss_tokenizer_n_ids(tok);
    int32_t all[MAX_VOCAB + 16];
    size_t n_all = 0;
    for (int32_t i = -1; i <= n_ids && n_all < sizeof all / sizeof all[0]; i++) all[n_all++] = i;
    check_decode(tok, all, n_all, 0, 0);
    check_decode(tok, all + 1, n_all - 2, opts & 1, 0);
    ss_tokenizer_free(tok);
    return 0;
}
#endif
