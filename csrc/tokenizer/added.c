#include "added.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "unicode.h"
#include "utf8.h"

void tok_added_free(tok_added_set *set) {
    free(set->child);
    free(set->sibling);
    free(set->pattern);
    free(set->label);
    free(set->info);
    memset(set, 0, sizeof *set);
}

ss_status tok_added_init(tok_added_set *set, const ss_added_token *tokens, int32_t n, int normalized,
                         ss_error *err) {
    memset(set, 0, sizeof *set);
    for (int i = 0; i < 256; i++) set->root[i] = -1;
    size_t total = 1;
    for (int32_t t = 0; t < n; t++)
        if (!tokens[t].normalized == !normalized) total += tokens[t].pattern_len;
    if (total > INT32_MAX) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "added tokens are too long");
    set->child = malloc(total * sizeof(int32_t));
    set->sibling = malloc(total * sizeof(int32_t));
    set->pattern = malloc(total * sizeof(int32_t));
    set->label = malloc(total);
    set->info = malloc(((size_t)n + 1) * sizeof(tok_added_info));
    if (!set->child || !set->sibling || !set->pattern || !set->label || !set->info) {
        tok_added_free(set);
        return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for added tokens");
    }
    set->n_nodes = 1; /* node 0: the root, whose children live in root[] */
    set->pattern[0] = -1;
    for (int32_t t = 0; t < n; t++) {
        const ss_added_token *tk = &tokens[t];
        if (!tk->normalized != !normalized) continue;
        const uint8_t *p = (const uint8_t *)tk->pattern;
        int32_t node = 0;
        for (size_t k = 0; k < tk->pattern_len; k++) {
            int32_t c = node == 0 ? set->root[p[k]] : set->child[node];
            while (node != 0 && c >= 0 && set->label[c] != p[k]) c = set->sibling[c];
            if (c < 0) {
                c = set->n_nodes++;
                set->label[c] = p[k];
                set->child[c] = -1;
                set->pattern[c] = -1;
                if (node == 0) {
                    set->sibling[c] = -1;
                    set->root[p[k]] = c;
                } else {
                    set->sibling[c] = set->child[node];
                    set->child[node] = c;
                }
            }
            node = c;
        }
        if (set->pattern[node] < 0) {
            int32_t k = set->n_patterns++;
            set->pattern[node] = k;
            set->info[k] = (tok_added_info){tk->id, (uint8_t)!!tk->lstrip, (uint8_t)!!tk->rstrip,
                                            (uint8_t)!!tk->single_word};
        }
    }
    return SS_OK;
}

/* Length of the longest pattern starting at s[i] (0 if none); *pat gets it. */
static size_t longest_at(const tok_added_set *set, const uint8_t *s, size_t n, size_t i, int32_t *pat) {
    size_t best = 0;
    int32_t node = set->root[s[i]];
    for (size_t k = i + 1; node >= 0; k++) {
        if (set->pattern[node] >= 0) {
            best = k - i;
            *pat = set->pattern[node];
        }
        if (k == n) break;
        int32_t c = set->child[node];
        while (c >= 0 && set->label[c] != s[k]) c = set->sibling[c];
        node = c;
    }
    return best;
}

static int is_class_before(const uint8_t *s, size_t pos, uint8_t cls) {
    uint32_t cp;
    if (pos == 0) return 0;
    tok_utf8_prev(s, pos, &cp);
    return (tok_uni_class(cp) & cls) != 0;
}

static int is_class_at(const uint8_t *s, size_t n, size_t pos, uint8_t cls, size_t *len) {
    uint32_t cp;
    if (pos >= n) return 0;
    *len = (size_t)tok_utf8_decode(s + pos, n - pos, &cp);
    return (tok_uni_class(cp) & cls) != 0;
}

ss_status tok_added_split(const tok_added_set *set, const uint8_t *s, size_t n, tok_piece_fn fn, void *ctx) {
    ss_status st;
    size_t done = 0; /* end of the last token reported */
    size_t scan = 0; /* where the search for the next match resumes */
    while (set->n_patterns > 0 && scan < n) {
        size_t start = scan, len = 0;
        int32_t pat = -1;
        for (; start < n; start++) {
            if (set->root[s[start]] >= 0 && (len = longest_at(set, s, n, start, &pat)) > 0) break;
        }
        if (len == 0) break;
        size_t stop = start + len;
        /* Matching resumes after the match itself, not after what rstrip
         * swallows, as with Hugging Face's aho-corasick iterator. */
        scan = stop;
        const tok_added_info *info = &set->info[pat];
        if (info->single_word) {
            size_t l;
            if (is_class_before(s, start, TOK_WORD) || is_class_at(s, n, stop, TOK_WORD, &l)) continue;
        }
        if (info->lstrip) {
            size_t newstart = start;
            while (newstart > 0) {
                uint32_t cp;
                size_t prev = tok_utf8_prev(s, newstart, &cp);
                if (!(tok_uni_class(cp) & TOK_SPACE)) break;
                newstart = prev;
            }
            /* Spaces already swallowed by the previous token stay with it. */
            start = newstart > done ? newstart : done;
        }
        if (info->rstrip) {
            size_t l;
            while (is_class_at(s, n, stop, TOK_SPACE, &l)) stop += l;
        }
        if (done < start && (st = fn(ctx, s, done, start, -1)) != SS_OK) return st;
        /* A token whose slice ended up empty is dropped, like any empty split. */
        if (start < stop && (st = fn(ctx, s, start, stop, info->id)) != SS_OK) return st;
        /* Even when rstrip let the previous token reach past this match
         * (a run of spaces that a space token also matches): Hugging Face
         * then keeps both tokens. */
        done = stop;
    }
    if (done < n) return fn(ctx, s, done, n, -1);
    return SS_OK;
}
