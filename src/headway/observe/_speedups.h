/* What the parts of headway.observe._speedups share. */
#ifndef HEADWAY_SPEEDUPS_H
#define HEADWAY_SPEEDUPS_H
#include <Python.h>
#include <stddef.h>
#include <string.h>

/* One API request's outcome (_speedups_outcome.c): the C twin of the gateway's
 * PyObservation, whose fields the C readers below take straight from the struct. */
typedef struct {
    PyObject_HEAD
    PyObject *attributes, *completion, *endpoint, *generation, *latency, *model, *prompt,
        *reason, *request_id, *route, *stamps, *start, *status, *stream, *tenant, *trace,
        *trace_id, *ttft;
} Outcome;

extern PyTypeObject OutcomeType;

/* o.<field> as a new reference: read from the struct when o is an Outcome (unless deleted),
 * else through getattr (any object with the attributes will do). */
static inline PyObject *outcome_attr(PyObject *o, size_t offset, PyObject *name) {
    if (Py_IS_TYPE(o, &OutcomeType)) {
        PyObject *v = *(PyObject **)((char *)o + offset);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(o, name);
}
#define OUTCOME_ATTR(o, field, name) outcome_attr((o), offsetof(Outcome, field), (name))

/* Whether a and b are equal for certain, without running Python code: the same object, or
 * exact str or int of the same value (which a dict finds equal, and which print the same). */
static inline int same_item(PyObject *a, PyObject *b) {
    if (a == b) {
        return 1;
    }
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        int kind = PyUnicode_KIND(a);
        return n == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b) &&
               memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * (size_t)kind) == 0;
    }
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b)) {
        int overflow_a, overflow_b;
        long long x = PyLong_AsLongLongAndOverflow(a, &overflow_a);
        long long y = PyLong_AsLongLongAndOverflow(b, &overflow_b);
        return !overflow_a && !overflow_b && x == y;
    }
    return 0;
}

/* record_outcome (_speedups_outcome.c): a whole answer's Outcome in one call. */
PyObject *record_outcome(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* Add the Tally (_speedups_tally.c) and Outcome types to the module; -1 with an exception. */
int tally_add_type(PyObject *module);
int outcome_add_type(PyObject *module);

#endif
