/* Outcome: one API request's outcome, filled in as it progresses (the gateway's
 * PyObservation in _recorder.py is the reference, field for field and default for default).
 *
 * Why: made once per observed request, a Python object with 17 slots cost ~2.4k instructions
 * to build, and the access log and the metrics tally read ~20 of its attributes through
 * getattr (~100 instructions each). Built here it costs a few hundred, and those readers take
 * the fields straight from the struct (OUTCOME_ATTR in _speedups.h). Python code reads and
 * writes the fields as plain attributes (member descriptors, as fast as __slots__).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_speedups.h"

static PyObject *empty_reason, *zero_float, *zero_int;

/* Every field, for dealloc and the member table. */
#define FIELDS(X)                                                                         \
    X(attributes) X(completion) X(endpoint) X(generation) X(latency) X(model) X(prompt) \
    X(reason) X(request_id) X(route) X(stamps) X(start) X(status) X(stream) X(tenant)   \
    X(trace)                                                                            \
    X(trace_id) X(ttft)

static PyObject *outcome_make(PyTypeObject *type, PyObject *start, PyObject *route) {
    Outcome *self = (Outcome *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->start = Py_NewRef(start);
    self->route = Py_NewRef(route);
    self->tenant = Py_NewRef(Py_None);
    self->model = Py_NewRef(Py_None);
    self->endpoint = Py_NewRef(Py_None);
    self->request_id = Py_NewRef(Py_None);
    self->attributes = Py_NewRef(Py_None);
    self->prompt = Py_NewRef(Py_None);
    self->completion = Py_NewRef(Py_None);
    self->ttft = Py_NewRef(Py_None);
    self->stamps = Py_NewRef(Py_None);
    self->generation = Py_NewRef(zero_float);
    self->stream = Py_NewRef(Py_False);
    self->trace = Py_NewRef(Py_None);
    self->trace_id = Py_NewRef(Py_None);
    self->status = Py_NewRef(zero_int);
    self->reason = Py_NewRef(empty_reason);
    self->latency = Py_NewRef(zero_float);
    return (PyObject *)self;
}

/* record_outcome(pending, start, now, route, tenant, model, endpoint, request_id, attributes,
 *                prompt, completion, trace, status, reason, stream, first, stamps) -> bool
 * An answer's outcome made in one call, complete, and appended to pending; True when pending
 * was empty, so the caller schedules the drain. latency = now - start. A whole answer
 * (first None) has ttft None and its latency as its decode time; a stream (first: its first
 * chunk's time) has ttft = first - start, its chunk stamps (or None) and, with stamps, the
 * decode time from first to the last stamp (else 0.0). The gateway keeps a request's fields in
 * its own compiled objects until the answer is out: filled in attribute by attribute, an
 * Outcome cost ~20 calls by name from the compiled code (~2k instructions). The reference is
 * py_record_outcome in gateway/_observation.py. */
PyObject *record_outcome(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 17) {
        PyErr_Format(PyExc_TypeError, "record_outcome takes 17 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *pending = args[0];
    if (!PyList_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "record_outcome: pending must be a list");
        return NULL;
    }
    double start = PyFloat_AsDouble(args[1]);
    if (start == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double now = PyFloat_AsDouble(args[2]);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *first = args[15], *stamps = args[16];
    PyObject *ttft = NULL, *generation = NULL;
    if (first != Py_None) {
        double at = PyFloat_AsDouble(first);
        if (at == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        double decode = 0.0;
        if (stamps != Py_None) {
            if (!PyList_Check(stamps) || PyList_GET_SIZE(stamps) == 0) {
                PyErr_SetString(PyExc_TypeError, "record_outcome: stamps must be a non-empty list");
                return NULL;
            }
            double last = PyFloat_AsDouble(PyList_GET_ITEM(stamps, PyList_GET_SIZE(stamps) - 1));
            if (last == -1.0 && PyErr_Occurred()) {
                return NULL;
            }
            decode = last - at;
        }
        if ((ttft = PyFloat_FromDouble(at - start)) == NULL) {
            return NULL;
        }
        if ((generation = PyFloat_FromDouble(decode)) == NULL) {
            Py_DECREF(ttft);
            return NULL;
        }
    }
    PyObject *latency = PyFloat_FromDouble(now - start);
    if (latency == NULL) {
        Py_XDECREF(ttft);
        Py_XDECREF(generation);
        return NULL;
    }
    Outcome *o = (Outcome *)outcome_make(&OutcomeType, args[1], args[3]);
    if (o == NULL) {
        Py_DECREF(latency);
        Py_XDECREF(ttft);
        Py_XDECREF(generation);
        return NULL;
    }
#define SET(field, value) Py_SETREF(o->field, Py_NewRef(value));
    SET(tenant, args[4])
    SET(model, args[5])
    SET(endpoint, args[6])
    SET(request_id, args[7])
    SET(attributes, args[8])
    SET(prompt, args[9])
    SET(completion, args[10])
    SET(trace, args[11])
    SET(status, args[12])
    SET(reason, args[13])
    SET(stream, args[14])
#undef SET
    if (ttft == NULL) { /* a whole answer: its tokens came with its body */
        Py_SETREF(o->generation, Py_NewRef(latency));
    } else { /* the references made above */
        Py_SETREF(o->ttft, ttft);
        Py_SETREF(o->generation, generation);
        Py_SETREF(o->stamps, Py_NewRef(stamps));
    }
    Py_SETREF(o->latency, latency); /* the reference made above */
    int was_empty = PyList_GET_SIZE(pending) == 0;
    int rc = PyList_Append(pending, (PyObject *)o);
    Py_DECREF(o);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(was_empty);
}

static PyObject *outcome_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *start, *route;
    static char *kwlist[] = {"start", "route", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Outcome", kwlist, &start, &route)) {
        return NULL;
    }
    return outcome_make(type, start, route);
}

/* Outcome(start, route) without building an argument tuple (the common call). */
static PyObject *outcome_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n == 2 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        return outcome_make((PyTypeObject *)type, args[0], args[1]);
    }
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    }
    PyObject *kwds = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwds = PyDict_New();
        for (Py_ssize_t k = 0; kwds != NULL && k < PyTuple_GET_SIZE(kwnames); k++) {
            if (PyDict_SetItem(kwds, PyTuple_GET_ITEM(kwnames, k), args[n + k]) < 0) {
                Py_CLEAR(kwds);
            }
        }
        if (kwds == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
    }
    PyObject *made = outcome_new((PyTypeObject *)type, tuple, kwds);
    Py_DECREF(tuple);
    Py_XDECREF(kwds);
    return made;
}

/* Not a GC type: left to reference counting. An outcome can never be in a cycle: only the
 * recorder (its pending list, then the drain's sinks, which read fields and keep nothing) and a
 * stream's relay ever hold one, and its fields are strings, numbers, the request's attributes
 * (str -> str or list of str), its trace and a stream's chunk stamps (floats), none of which
 * refers back. As a GC type, each of the hundreds of outcomes waiting for their batch
 * (observe.record_delay) counted toward the next young collection and was traversed by it
 * (~1k instructions a request). */
static void outcome_dealloc(Outcome *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    FIELDS(CLEAR)
#undef CLEAR
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Attribute access by name, without the generic path's type lookup (~150 instructions a
 * get or set from Python or compiled code). The access log and the metrics read the struct
 * directly; the SLO and tracing sinks read ~5 and ~12 fields of every outcome by name, and the
 * Python twins and tests go through here too. The name, interned by the caller
 * (PyObject_GetAttr and PyObject_SetAttr intern it),
 * is compared by pointer with the interned field names. Anything else, and a deleted field's
 * read, takes the generic path, which behaves as before (AttributeError and all). */
#define COUNT(f) +1
enum { N_FIELDS = 0 FIELDS(COUNT) };
#undef COUNT
static PyObject *field_names[N_FIELDS];
static const Py_ssize_t field_offsets[N_FIELDS] = {
#define OFFSET(f) offsetof(Outcome, f),
    FIELDS(OFFSET)
#undef OFFSET
};

static inline PyObject **outcome_slot(PyObject *self, PyObject *name) {
    for (int i = 0; i < N_FIELDS; i++) {
        if (field_names[i] == name) {
            return (PyObject **)((char *)self + field_offsets[i]);
        }
    }
    return NULL;
}

static PyObject *outcome_getattro(PyObject *self, PyObject *name) {
    PyObject **slot = outcome_slot(self, name);
    if (slot != NULL && *slot != NULL) {
        return Py_NewRef(*slot);
    }
    return PyObject_GenericGetAttr(self, name);
}

static int outcome_setattro(PyObject *self, PyObject *name, PyObject *value) {
    PyObject **slot = value == NULL ? NULL : outcome_slot(self, name);
    if (slot == NULL) { /* deletion and unknown names: the member descriptors' behaviour */
        return PyObject_GenericSetAttr(self, name, value);
    }
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}

static PyMemberDef outcome_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(Outcome, f), 0, NULL},
    FIELDS(MEMBER)
#undef MEMBER
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject OutcomeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "headway.observe._speedups.Outcome",
    .tp_basicsize = sizeof(Outcome),
    .tp_dealloc = (destructor)outcome_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Outcome(start, route): one API request's outcome (see _recorder.PyObservation).",
    .tp_members = outcome_members,
    .tp_getattro = outcome_getattro,
    .tp_setattro = outcome_setattro,
    .tp_new = outcome_new,
    .tp_vectorcall = outcome_vectorcall,
};

int outcome_add_type(PyObject *module) {
    if ((empty_reason = PyUnicode_InternFromString("")) == NULL ||
        (zero_float = PyFloat_FromDouble(0.0)) == NULL || (zero_int = PyLong_FromLong(0)) == NULL) {
        return -1;
    }
    int i = 0;
#define NAME(f)                                                        \
    if ((field_names[i++] = PyUnicode_InternFromString(#f)) == NULL) { \
        return -1;                                                     \
    }
    FIELDS(NAME)
#undef NAME
    if (PyType_Ready(&OutcomeType) < 0) {
        return -1;
    }
    Py_INCREF(&OutcomeType);
    if (PyModule_AddObject(module, "Outcome", (PyObject *)&OutcomeType) < 0) {
        Py_DECREF(&OutcomeType);
        return -1;
    }
    return 0;
}
