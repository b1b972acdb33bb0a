/* Internal declarations shared by the CPython binding files (csrc/python/).
 * The binding converts Python objects to C arguments and ss_status into
 * exceptions; it holds no logic of its own. */
#ifndef SS_BINDING_H
#define SS_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <signal.h>

#include "specstream.h"

/* Raises the Python exception that matches status, with err's message. */
PyObject *ss_py_raise(ss_status status, const ss_error *err);

/* Ctrl-C during a long call. Python runs its SIGINT handler only when the
 * main thread is back in the interpreter, i.e. after the call. So, around a
 * call made from the main thread while SIGINT means KeyboardInterrupt (the
 * handler is signal.default_int_handler), a C handler raises a flag that the
 * core's loops poll between tokens and chunks (their `cancel` argument);
 * Python's handler is restored after the call. Elsewhere (other threads, a
 * handler of the program's own, SIG_IGN) nothing changes. */
typedef struct {
    int armed;
    struct sigaction saved;
} ss_sigint_guard;

/* With the GIL, before the call. *cancel: the flag to pass the core, NULL
 * when not armed. Returns -1 with an exception set when a Ctrl-C that came
 * before the call raises. */
int ss_sigint_arm(ss_sigint_guard *g, const volatile int **cancel);
/* With the GIL, after the call: restores the handler; 1 if SIGINT came. */
int ss_sigint_disarm(ss_sigint_guard *g);
/* ss_sigint_disarm, then a SIGINT that came goes to Python. A call that it
 * cancelled (st == SS_ERR_CANCELLED) raises KeyboardInterrupt now: returns
 * -1 with it set. After a call that finished, Python raises it at its next
 * check, as for a Ctrl-C just after the call. */
int ss_sigint_end(ss_sigint_guard *g, ss_status st);

/* Raises OSError (-1) when a watched weights map lost its file (a model
 * file truncated after load; py_mapped.c); call after every call into the
 * core that reads weights. */
int ss_py_check_mapped(void);

/* A dict of configuration values into a C struct of that kind (defaults
 * for missing keys), checked by the core; -1 with an exception set. Arrays
 * the struct borrows (IDS fields) are appended to keep. py_config.c. */
int ss_py_config_parse(ss_config_kind kind, PyObject *values, void *config, PyObject *keep);

/* The weight format called `name` (or an alias); -1 with a ValueError
 * listing the names otherwise. py_kernels.c. */
int ss_py_format(const char *name, ss_dtype *out);

/* Each binding file adds its types/functions to the module. */
int ss_py_add_config(PyObject *module);
int ss_py_add_model(PyObject *module);
int ss_py_add_tokenizer(PyObject *module);
int ss_py_add_kernels(PyObject *module); /* py_kernels.c: kernel access for tests */
int ss_py_add_mapped(PyObject *module);  /* py_mapped.c: weights maps whose files change */

#endif
