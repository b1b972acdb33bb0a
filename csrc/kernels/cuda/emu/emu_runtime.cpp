/* The SIMT emulator's scheduler and the CUDA runtime / cuBLAS subset the
 * backend calls, on host memory (see simt_emu.h). Single-threaded: every
 * call takes one lock, and kernels run to completion at launch unless the
 * stream is being captured, in which case launches, copies and memsets are
 * recorded and a graph replays them. */
#include "simt_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include <mutex>
#include <random>
#include <vector>

struct CUstream_st {
    bool capturing = false;
    std::vector<std::function<void()>> ops;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
struct CUevent_st {
    double t = 0.0;
};

namespace ss_emu {

uint3 cur_tid, cur_bid;
dim3 cur_bdim, cur_gdim;

namespace {

enum State { RUN, WARP_WAIT, BLOCK_WAIT, DONE };

/* A stack switch (x86-64 System V): saves the callee-saved registers on
 * the current stack, stores its pointer in *save, continues on `next`.
 * ucontext would do the same plus a signal-mask syscall per switch. */
extern "C" void ss_emu_switch(void **save, void *next);
asm(R"(
    .text
    .globl ss_emu_switch
    .type ss_emu_switch, @function
ss_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ss_emu_switch, .-ss_emu_switch
)");

struct Fiber {
    void *sp;
    uint3 tid;
    State st;
    uint64_t val, result;
    int off;
};

constexpr size_t kStack = 128 * 1024;
constexpr int kMaxThreads = 1024;

void *sched_sp = nullptr;
Fiber fibers[kMaxThreads];
char *stacks = nullptr;
Fiber *cur = nullptr;
const std::function<void()> *cur_body = nullptr;
std::mt19937 rng(12345);
std::recursive_mutex big_lock;
cudaError_t last_error = cudaSuccess;

[[noreturn]] void fiber_entry() {
    (*cur_body)();
    cur->st = DONE;
    ss_emu_switch(&cur->sp, sched_sp); /* never resumed */
    abort();
}

/* A fresh stack whose first switch "returns" into fiber_entry, aligned as if
 * fiber_entry had been called. */
void *fresh_stack(char *base, size_t size) {
    uintptr_t top = ((uintptr_t)(base + size)) & ~(uintptr_t)15;
    void **p = (void **)top;
    *--p = nullptr;                     /* fiber_entry's return address (never used) */
    *--p = (void *)&fiber_entry;        /* where the first switch's ret goes */
    for (int r = 0; r < 6; r++) *--p = nullptr; /* rbp rbx r12 r13 r14 r15 */
    return p;
}

[[noreturn]] void deadlock(int n) {
    fprintf(stderr, "simt_emu: barrier deadlock in block (%u,%u,%u):", cur_bid.x, cur_bid.y, cur_bid.z);
    for (int t = 0; t < n; t++)
        if (fibers[t].st != DONE) fprintf(stderr, " t%d:%s", t, fibers[t].st == WARP_WAIT ? "shfl" : "sync");
    fprintf(stderr, "\n");
    abort();
}

void run_block(int n) {
    const uint3 b = {cur_bdim.x, cur_bdim.y, cur_bdim.z};
    for (int t = 0; t < n; t++) {
        Fiber &f = fibers[t];
        f.sp = fresh_stack(stacks + (size_t)t * kStack, kStack);
        f.tid = {(unsigned)(t % b.x), (unsigned)((t / b.x) % b.y), (unsigned)(t / (b.x * b.y))};
        f.st = RUN;
    }
    for (unsigned phase = 0;; phase++) {
        /* Run every runnable fiber to its next barrier, from a random start,
         * forwards or backwards: a read that is not ordered by a barrier then
         * sees stale data now and then, as it might on a GPU. */
        const int start = (int)(rng() % (unsigned)n);
        const bool backwards = (phase ^ (unsigned)rng()) & 1;
        for (int i = 0; i < n; i++) {
            const int t = backwards ? (start - i + n) % n : (start + i) % n;
            if (fibers[t].st != RUN) continue;
            cur = &fibers[t];
            cur_tid = cur->tid;
            ss_emu_switch(&sched_sp, cur->sp);
        }
        int alive = 0;
        for (int t = 0; t < n; t++) alive += fibers[t].st != DONE;
        if (alive == 0) return;
        bool released = false;
        for (int w = 0; w * 32 < n; w++) {
            int waiting = 0;
            for (int l = 0; l < 32; l++) waiting += fibers[w * 32 + l].st == WARP_WAIT;
            if (waiting == 0) continue;
            if (waiting != 32) continue; /* lanes elsewhere: a deadlock unless they get here */
            const int off = fibers[w * 32].off;
            for (int l = 0; l < 32; l++) {
                if (fibers[w * 32 + l].off != off) {
                    fprintf(stderr, "simt_emu: lanes of one warp shuffle with different offsets\n");
                    abort();
                }
            }
            for (int l = 0; l < 32; l++) fibers[w * 32 + l].result = fibers[w * 32 + (l ^ off)].val;
            for (int l = 0; l < 32; l++) fibers[w * 32 + l].st = RUN;
            released = true;
        }
        if (released) continue;
        int at_barrier = 0;
        for (int t = 0; t < n; t++) at_barrier += fibers[t].st == BLOCK_WAIT;
        if (at_barrier != alive) deadlock(n);
        for (int t = 0; t < n; t++)
            if (fibers[t].st == BLOCK_WAIT) fibers[t].st = RUN;
    }
}

} // namespace

void sync_block() {
    cur->st = BLOCK_WAIT;
    ss_emu_switch(&cur->sp, sched_sp);
}

uint64_t shfl_xor_bits(uint64_t bits, int offset) {
    cur->val = bits;
    cur->off = offset;
    cur->st = WARP_WAIT;
    ss_emu_switch(&cur->sp, sched_sp);
    return cur->result;
}

void run_kernel(dim3 grid, dim3 block, const std::function<void()> &body) {
    const int n = (int)(block.x * block.y * block.z);
    if (!stacks) {
        stacks = (char *)mmap(nullptr, kStack * kMaxThreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (stacks == MAP_FAILED) abort();
    }
    cur_body = &body;
    cur_bdim = block;
    cur_gdim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                cur_bid = {x, y, z};
                run_block(n);
            }
}

cudaError_t launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> body) {
    std::lock_guard<std::recursive_mutex> lock(big_lock);
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || threads % 32 != 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535) {
        if (threads % 32 != 0 && threads > 0 && threads <= 1024)
            fprintf(stderr, "simt_emu: block of %u threads (the emulator needs whole warps)\n", threads);
        last_error = cudaErrorInvalidConfiguration;
        return last_error;
    }
    auto op = [grid, block, body]() { run_kernel(grid, block, body); };
    if (stream && stream->capturing) stream->ops.push_back(op);
    else op();
    return cudaSuccess;
}

static cudaError_t stream_op(cudaStream_t stream, std::function<void()> op) {
    std::lock_guard<std::recursive_mutex> lock(big_lock);
    if (stream && stream->capturing) stream->ops.push_back(std::move(op));
    else op();
    return cudaSuccess;
}

} // namespace ss_emu

using ss_emu::big_lock;
using ss_emu::last_error;

/* ------------------------------------------------------------ runtime */

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    (void)device;
    const char *sms = getenv("SS_EMU_SMS");
    *value = attr == cudaDevAttrMultiProcessorCount ? (sms ? atoi(sms) : 132) : 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    (void)device;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "SIMT emulator");
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }

cudaError_t cudaMalloc(void **p, size_t n) {
    *p = calloc(1, n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags) {
    (void)flags;
    return cudaMalloc(p, n);
}
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    *free_b = *total_b = (size_t)1 << 34;
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    (void)kind;
    memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
    (void)kind;
    return ss_emu::stream_op(s, [dst, src, n]() { memcpy(dst, src, n); });
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t s) {
    return ss_emu::stream_op(s, [dst, v, n]() { memset(dst, v, n); });
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    *s = new CUstream_st();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    return s && s->capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    (void)mode;
    std::lock_guard<std::recursive_mutex> lock(big_lock);
    if (!s || s->capturing) return cudaErrorIllegalState;
    s->capturing = true;
    s->ops.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    std::lock_guard<std::recursive_mutex> lock(big_lock);
    if (!s || !s->capturing) return cudaErrorIllegalState;
    s->capturing = false;
    *graph = new CUgraph_st{std::move(s->ops)};
    s->ops.clear();
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    (void)flags;
    *exec = new CUgraphExec_st{graph->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> lock(big_lock);
    if (s && s->capturing) return cudaErrorStreamCaptureUnsupported;
    for (auto &op : exec->ops) op();
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new CUevent_st();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

/* ------------------------------------------------------------- cuBLAS */

struct cublasContext {
    cudaStream_t stream = nullptr;
};

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? "success" : "emulated error"; }

static float load_as_f32(const void *p, cudaDataType t, size_t i) {
    switch (t) {
    case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
    case CUDA_R_16BF: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* Column-major C (m x n, ldc) = alpha op(A) op(B) + beta C, as documented:
 * op(A) is m x k (A is k x m with lda when transposed), op(B) is k x n. */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)algo;
    if (Ctype != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F || Atype != Btype) return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((ta == CUBLAS_OP_N ? lda < m : lda < k) || (tb == CUBLAS_OP_N ? ldb < k : ldb < n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    auto op = [=]() {
        float *c = (float *)C;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int p = 0; p < k; p++) {
                    const size_t ai = ta == CUBLAS_OP_N ? (size_t)i + (size_t)p * lda : (size_t)p + (size_t)i * lda;
                    const size_t bi = tb == CUBLAS_OP_N ? (size_t)p + (size_t)j * ldb : (size_t)j + (size_t)p * ldb;
                    acc = fmaf(load_as_f32(A, Atype, ai), load_as_f32(B, Btype, bi), acc);
                }
                float &out = c[(size_t)i + (size_t)j * ldc];
                out = al * acc + (be != 0.0f ? be * out : 0.0f);
            }
    };
    ss_emu::stream_op(h->stream, op);
    return CUBLAS_STATUS_SUCCESS;
}
