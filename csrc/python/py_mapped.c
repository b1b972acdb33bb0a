/* Weights files that change under a live memory map. Model weights are
 * used in place from read-only maps of their files; if a file is truncated
 * or rewritten in place after load, reading a page past its new end raises
 * SIGBUS, which would kill the process. While any map is watched, a SIGBUS
 * handler recognises faults inside watched maps, puts a page of zeros where
 * the file page was (so the call runs to its end, on garbage) and flags the
 * map; the binding then raises OSError after the call, and on every later
 * call, until the maps are released. Faults elsewhere go to the handler
 * that was there before (or the default action: the process ends as it
 * would have). */
#include "binding.h" /* Python.h first: it sets the feature macros */

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { MAX_WATCHED = 4096 };

typedef struct {
    uintptr_t begin, end;
    volatile sig_atomic_t used, faulted;
} watched_map;

static watched_map watched[MAX_WATCHED];
static PyObject *watched_names[MAX_WATCHED]; /* file names, for the message */
static volatile sig_atomic_t any_faulted;
static struct sigaction previous;
static int installed;
static uintptr_t page_size;

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    const uintptr_t at = (uintptr_t)info->si_addr;
    for (int i = 0; i < MAX_WATCHED; i++) {
        if (!watched[i].used || at < watched[i].begin || at >= watched[i].end) continue;
        void *page = (void *)(at & ~(page_size - 1));
        if (mmap(page, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) break;
        watched[i].faulted = 1;
        any_faulted = 1;
        return; /* the access runs again, on zeros */
    }
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    } else { /* the access runs again and ends the process as it would have */
        signal(SIGBUS, SIG_DFL);
    }
}

static int install(void) {
    if (installed) return 0;
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    if (sigaction(SIGBUS, &sa, &previous) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    installed = 1;
    return 0;
}

/* watch_mapping(address, length, name) -> id */
static PyObject *watch_mapping(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long address, length;
    PyObject *name;
    if (!PyArg_ParseTuple(args, "KKU", &address, &length, &name)) return NULL;
    if (install() < 0) return NULL;
    for (int i = 0; i < MAX_WATCHED; i++) {
        if (watched[i].used) continue;
        watched[i].begin = (uintptr_t)address;
        watched[i].end = (uintptr_t)(address + length);
        watched[i].faulted = 0;
        Py_INCREF(name);
        watched_names[i] = name;
        __atomic_store_n(&watched[i].used, 1, __ATOMIC_RELEASE); /* the handler sees a whole entry */
        return PyLong_FromLong(i);
    }
    PyErr_Format(PyExc_RuntimeError, "more than %d weight files are mapped at once", MAX_WATCHED);
    return NULL;
}

static PyObject *unwatch_mapping(PyObject *self, PyObject *arg) {
    (void)self;
    const long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= MAX_WATCHED || !watched[i].used) {
        PyErr_Format(PyExc_ValueError, "no watched mapping %ld", i);
        return NULL;
    }
    __atomic_store_n(&watched[i].used, 0, __ATOMIC_RELEASE);
    Py_CLEAR(watched_names[i]);
    int faulted = 0;
    for (int j = 0; j < MAX_WATCHED; j++) faulted |= watched[j].used && watched[j].faulted;
    any_faulted = faulted;
    Py_RETURN_NONE;
}

int ss_py_check_mapped(void) {
    if (!any_faulted) return 0;
    PyObject *files = PyList_New(0);
    for (int i = 0; files && i < MAX_WATCHED; i++)
        if (watched[i].used && watched[i].faulted && PyList_Append(files, watched_names[i]) < 0) Py_CLEAR(files);
    if (files) {
        PyErr_Format(PyExc_OSError,
                     "weights file(s) %R changed after the model was loaded (truncated or rewritten in place): "
                     "the model's weights are gone, results are invalid; load the model again (or load with "
                     "mmap=False to keep weights in memory)", files);
        Py_DECREF(files);
    }
    return -1;
}

static PyMethodDef methods[] = {
    {"watch_mapping", watch_mapping, METH_VARARGS,
     "watch_mapping(address, length, name) -> id: a read-only weights map whose file may change"},
    {"unwatch_mapping", unwatch_mapping, METH_O, "unwatch_mapping(id): the map is released"},
    {NULL, NULL, 0, NULL},
};

int ss_py_add_mapped(PyObject *module) { return PyModule_AddFunctions(module, methods); }
