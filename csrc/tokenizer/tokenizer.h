/*
 * tokenizer.h - byte-level BPE tokenizer of the GPT-2 / GPT-NeoX family.
 *
 * Gives the same token ids as Hugging Face `tokenizers` for a tokenizer.json
 * whose model is BPE and whose pre-tokenizer and decoder are ByteLevel
 * (GPT-NeoX-20B, used by every Pythia model, or one trained the same way):
 *
 *   1. added tokens are split out first, leftmost-longest, with their
 *      lstrip / rstrip / single_word flags; tokens with normalized == 0 are
 *      matched on the text as given, the others on the normalized text;
 *   2. the pieces between them are cut by the GPT-2 regex
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (optionally after prepending a space to each piece);
 *   3. each word is merged by BPE, lowest merge rank first.
 *
 * Normalization (NFC) is not done here: it needs tables this library does
 * not carry. Callers whose tokenizer has a normalizer pass normalized text
 * (see ss_tokenizer_split_added for the exact order of the two steps).
 *
 * Text is UTF-8. Ill-formed input never fails and is not repaired: each
 * maximal ill-formed subsequence (as defined for U+FFFD substitution by the
 * Unicode standard, ch. 3) is classed as punctuation by the regex, and BPE
 * works on bytes, so the tokens' bytes are the input's bytes -- except bytes
 * with no token in the vocabulary (GPT-NeoX has none for C0, C1 and F5-FF,
 * which never occur in UTF-8): like Hugging Face, encoding drops them, or
 * gives unk_id when the vocabulary has one.
 *
 * Conventions are those of specstream.h: every fallible call returns
 * ss_status and fills an ss_error; the handle is read-only after creation
 * and may be used by several threads at once (each call has its own scratch
 * memory); a decode stream belongs to one thread at a time.
 */
#ifndef SS_TOKENIZER_H
#define SS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ss_tokenizer ss_tokenizer;

/* A token added on top of the BPE vocabulary (special or not). */
typedef struct {
    const char *content;     /* UTF-8, as in tokenizer.json; what decoding gives */
    size_t content_len;
    const char *pattern;     /* what is matched in the text: content, or its
                                normalized form for normalized tokens; NULL
                                means content */
    size_t pattern_len;
    int32_t id;
    int special;             /* dropped by decode when skip_special is set  */
    int normalized;          /* matched on normalized text (see above)      */
    int lstrip, rstrip;      /* swallow the whitespace on that side         */
    int single_word;         /* only match when not inside a word           */
} ss_added_token;

typedef struct {
    /* BPE vocabulary: the token of id i is the byte-level string (GPT-2's
     * byte-to-unicode alphabet, UTF-8 encoded) vocab_data[vocab_offsets[i]
     * .. vocab_offsets[i+1]); an empty one means no token has id i. */
    int32_t n_vocab_ids;
    const char *vocab_data;
    const int64_t *vocab_offsets;    /* n_vocab_ids + 1, starting at 0     */
    /* Merges in priority order, row r = rank r: left id, right id, merged id.
     * The merged token must be the concatenation of the two. A pair listed
     * twice keeps its last rank, as in Hugging Face. */
    int32_t n_merges;
    const int32_t *merges;           /* n_merges x 3                       */
    int32_t n_added;
    const ss_added_token *added;
    int32_t unk_id;                  /* -1: bytes without a token are dropped */
    int fuse_unk;                    /* consecutive unknowns give one unk_id */
    int add_prefix_space;            /* prepend ' ' to pieces not starting with one */
    int use_regex;                   /* 0: each piece is one word          */
    int ignore_merges;               /* a word that is a token is kept whole */
} ss_tokenizer_config;

/* Validates and copies everything it needs from config (nothing is borrowed). */
ss_status ss_tokenizer_create(const ss_tokenizer_config *config, ss_tokenizer **out, ss_error *err);
void ss_tokenizer_free(ss_tokenizer *tok);

/* Size of the id space: one more than the largest id of any token. */
int32_t ss_tokenizer_n_ids(const ss_tokenizer *tok);
/* The bytes that decoding id gives (before UTF-8 repair), or SS_ERR_OUT_OF_RANGE
 * if no token has that id. The pointer lives as long as tok. */
ss_status ss_tokenizer_token_bytes(const ss_tokenizer *tok, int32_t id, const char **bytes,
                                   size_t *len, ss_error *err);
int ss_tokenizer_is_special(const ss_tokenizer *tok, int32_t id);

/* Which added tokens ss_tokenizer_encode splits out itself. */
enum {
    SS_TOK_MATCH_RAW = 1,        /* tokens with normalized == 0 */
    SS_TOK_MATCH_NORMALIZED = 2, /* tokens with normalized != 0 */
    SS_TOK_MATCH_ALL = 3
};

/* Encodes text[0..len) into a malloc'ed array *ids (release with free()) of
 * *n_ids <= len token ids. With a normalizer, the exact order is: split off
 * the raw added tokens (ss_tokenizer_split_added), normalize each piece in
 * between, and encode each with SS_TOK_MATCH_NORMALIZED; when text has no raw
 * added token (or normalizing it changes nothing) one call with
 * SS_TOK_MATCH_ALL on the normalized text is the same. */
ss_status ss_tokenizer_encode(const ss_tokenizer *tok, const char *text, size_t len,
                              unsigned flags, int32_t **ids, size_t *n_ids, ss_error *err);

/* One piece of text split by added tokens: id >= 0 for a token, id == -1 for
 * text between tokens. Offsets are bytes into the text, end exclusive. */
typedef struct {
    size_t start, end;
    int32_t id;
} ss_token_span;

/* Splits text on the added tokens with normalized == 0, the first step of
 * encoding. *spans (malloc'ed, release with free()) covers the text in order;
 * it is empty (*n_spans == 0, *spans NULL) when no such token occurs. */
ss_status ss_tokenizer_split_added(const ss_tokenizer *tok, const char *text, size_t len,
                                   ss_token_span **spans, size_t *n_spans, ss_error *err);

/* The words the GPT-2 regex cuts text[0..len) into (no added tokens, no
 * prefix space): word i ends at (*ends)[i], malloc'ed (release with free()).
 * For tests and tools; encoding does this internally. */
ss_status ss_pretokenize(const char *text, size_t len, size_t **ends, size_t *n_words, ss_error *err);

/* Decodes ids into malloc'ed, NUL-terminated, valid UTF-8 text (release with
 * free()): the tokens' bytes are concatenated and every ill-formed sequence
 * is replaced by U+FFFD, as Hugging Face's ByteLevel decoder does. An id that
 * names no token fails with SS_ERR_OUT_OF_RANGE. skip_special drops special
 * added tokens. */
ss_status ss_tokenizer_decode(const ss_tokenizer *tok, const int32_t *ids, size_t n,
                              int skip_special, char **text, size_t *len, ss_error *err);

/* Incremental decoding, one token at a time, for printing generated text:
 * push returns only complete characters and keeps the bytes of a character
 * split across tokens until it is complete (or proven ill-formed); flush
 * returns what is left (a dangling partial character becomes U+FFFD).
 * Everything pushed then flushed equals ss_tokenizer_decode of the same ids.
 * The returned text is valid UTF-8, not NUL-terminated, and lives until the
 * next call on the stream. The tokenizer must outlive the stream. */
typedef struct ss_decode_stream ss_decode_stream;

ss_status ss_decode_stream_create(const ss_tokenizer *tok, int skip_special,
                                  ss_decode_stream **out, ss_error *err);
ss_status ss_decode_stream_push(ss_decode_stream *stream, int32_t id, const char **text,
                                size_t *len, ss_error *err);
void ss_decode_stream_flush(ss_decode_stream *stream, const char **text, size_t *len);
void ss_decode_stream_free(ss_decode_stream *stream);

#ifdef __cplusplus
}
#endif
#endif /* SS_TOKENIZER_H */
