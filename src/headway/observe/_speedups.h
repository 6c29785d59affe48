/* What the parts of headway.observe._speedups share. */
#ifndef HEADWAY_SPEEDUPS_H
#define HEADWAY_SPEEDUPS_H
#include <Python.h>
#include <stddef.h>

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

/* Add the Tally (_speedups_tally.c) and Outcome types to the module; -1 with an exception. */
int tally_add_type(PyObject *module);
int outcome_add_type(PyObject *module);

#endif
