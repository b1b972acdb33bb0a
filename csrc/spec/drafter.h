/* The drafter interface: whatever proposes tokens for the target to verify
 * (a draft model, prompt lookup, Lookahead decoding's n-gram pool, Medusa
 * heads) behind one verification loop (generate.c).
 *
 * A round: the drafter proposes a tree of candidate tokens hanging off the
 * last committed token (the root, which the target has not processed yet);
 * the target runs the root and the whole tree in one forward with the tree
 * attention mask; the verifier walks the tree from the root, accepting a
 * path of candidates and adding one token of its own (verify.h); the
 * drafter then hears the verdict, with the target's outputs for every node,
 * and readies its own state for the next round.
 *
 * One file per drafter, each exposing a constructor that fills an
 * ss_drafter; ss_drafter_create picks it by method. */
#ifndef SS_DRAFTER_H
#define SS_DRAFTER_H

#include <stddef.h>
#include <stdint.h>

#include "spec/sampling.h"
#include "specstream.h"

/* A proposal. Nodes are numbered in topological order (a parent before its
 * children) and siblings in the order they were drawn. Nodes [0,
 * n_candidates) are candidates the verifier may accept; later nodes are
 * context whose outputs the drafter wants (Lookahead decoding's lookahead
 * branch) and are never ancestors of candidates. */
typedef struct {
    int capacity;
    int n, n_candidates;
    int32_t *token;     /* [capacity]                                            */
    int32_t *parent;    /* [capacity]: a node index, or -1 for the root          */
    /* [capacity]: the distribution (over the shared vocabulary) the node was
     * drawn from, shared by its siblings, which were drawn from it without
     * replacement, in order; NULL: a deterministic proposal. Owned by the
     * drafter, valid until its next propose. */
    const float **q;
} ss_draft_tree;

/* What a drafter may read while proposing. */
typedef struct {
    const int32_t *tokens;   /* the committed sequence: prompt, then output   */
    int64_t n_tokens;        /* the last one is the root                      */
    const ss_sampling *sampling;
    ss_rng *rng;             /* the generator's: output is a function of the seed */
    int vocab;               /* ids the target and the drafter share          */
    ss_prob_index *scratch;  /* room for `vocab` entries                      */
} ss_draft_context;

/* The verifier's outcome of a round, with the target's outputs: row 0 is the
 * root, row 1 + i tree node i. After the prompt, a first verdict has no
 * tree (n_nodes = 0) and row 0 is the prompt's last token. */
typedef struct {
    const int32_t *path;     /* accepted nodes, the root's child first        */
    int n_path;
    int32_t next;            /* the token the target added after the path     */
    int n_nodes;             /* nodes of the verified tree                    */
    const float *logits;     /* [1 + n_nodes][logits_stride]                  */
    int logits_stride;
    const float *hidden;     /* [1 + n_nodes][d_model] final hidden states, for
                                drafters with wants_hidden (else NULL)         */
    double propose_s, verify_s; /* timings of the round                       */
} ss_verdict;

typedef struct ss_drafter ss_drafter;

typedef struct {
    const char *name;
    int wants_hidden;        /* the target's final hidden states in verdicts  */
    /* The largest tree it will propose (nodes, root excluded). */
    int (*max_nodes)(const ss_drafter *d);
    /* Reads the prompt (all but its last token, the first root) into
     * whatever the drafter runs; resumes where a cancelled call stopped. */
    ss_status (*prefill)(ss_drafter *d, const int32_t *prompt, int64_t n, const volatile int *cancel,
                         ss_error *err);
    ss_status (*propose)(ss_drafter *d, const ss_draft_context *ctx, ss_draft_tree *tree, ss_error *err);
    ss_status (*accept)(ss_drafter *d, const ss_draft_context *ctx, const ss_draft_tree *tree, const ss_verdict *v,
                        ss_error *err);
    size_t (*cache_bytes)(const ss_drafter *d);
    void (*free)(ss_drafter *d);
} ss_drafter_ops;

struct ss_drafter {
    const ss_drafter_ops *ops;
};

/* What drafters are built from. */
typedef struct {
    const ss_model *target;
    const ss_model *draft;           /* draft and tree methods                */
    const ss_cache_config *draft_cache;
    const ss_medusa *medusa;         /* medusa method                         */
    const ss_speculative *spec;
    int max_prefill;                 /* tokens per prefill chunk              */
    int64_t sequence_tokens;         /* prompt + most new tokens of the call  */
} ss_draft_sources;

/* A full cache without a capacity (0) gets one for `needed` tokens. */
ss_status ss_size_full_cache(ss_cache_config *c, int64_t needed, ss_error *err);

/* The drafter of spec->method (NULL for target-only decoding). */
ss_status ss_drafter_create(const ss_draft_sources *src, ss_drafter **out, ss_error *err);

/* Constructors, one per file. */
ss_status ss_drafter_model(const ss_draft_sources *src, ss_drafter **out, ss_error *err);      /* draft_model.c */
ss_status ss_drafter_lookup(const ss_draft_sources *src, ss_drafter **out, ss_error *err);     /* lookup.c      */
ss_status ss_drafter_lookahead(const ss_draft_sources *src, ss_drafter **out, ss_error *err);  /* lookahead.c   */
ss_status ss_drafter_medusa(const ss_draft_sources *src, ss_drafter **out, ss_error *err);     /* medusa.c      */

#endif
