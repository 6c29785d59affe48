/* Tally: what a batch of request outcomes (or upstream attempts) adds to each metric series,
 * kept in C arrays until a scrape takes it. The reference is PyTally in _tally.py; the tests
 * hold the two to the same numbers, bit for bit.
 *
 * Why: counting a request into its series in Python (a dict lookup, a bisect, a dozen
 * attribute updates) cost ~9.5k instructions per request in the gateway, and an upstream
 * attempt another ~4k (bench/instructions.py). Here a request costs its attribute reads, a key
 * tuple, one dict lookup and a few additions into a slot the series' numbers live in until
 * take(); GatewayMetrics adds them into its prometheus series when it is scraped.
 *
 * A slot is an integer the caller's `miss(*key)` chooses for a key it has not seen (the caller
 * owns the key -> slot dict, and which keys it remembers there); `bind(slot, run, flush)` names
 * the list a slot's latencies are appended to (its latency sketch's pending values) and the
 * object to return when an append brings that list to `flush_at` items (the sketch to fold).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_speedups.h"

/* A slot index past this is a caller bug, not a series (series are bounded by config). */
#define MAX_SLOTS (1 << 20)

typedef struct {
    long long count;
    double sum;
    long long *buckets; /* nb + 1 latency, ntps + 1 tokens/s, nb + 1 TTFT, ngap + 1 gap buckets */
    int dirty;
    int tokens_seen;
    long long prompt, completion; /* token totals that fit in 64 bits ... */
    PyObject *prompt_big, *completion_big; /* ... and the rest, as Python ints (NULL: none) */
    double tps_sum;
    int streamed;            /* a TTFT or chunk stamps were seen */
    double ttft_sum, gap_sum;
    PyObject *run;   /* where latencies go (NULL: nowhere) */
    PyObject *flush; /* returned when run turns non-empty */
} Slot;

typedef struct {
    PyObject_HEAD
    double *bounds;
    Py_ssize_t nb;
    double *tps;
    Py_ssize_t ntps;
    double *gaps;
    Py_ssize_t ngap;
    Slot *slots;
    Py_ssize_t nslots;
    Py_ssize_t flush_at;
} Tally;

static PyObject *s_route, *s_model, *s_tenant, *s_status, *s_reason, *s_latency, *s_prompt,
    *s_completion, *s_generation, *s_ttft, *s_stamps;

/* Offsets of each histogram in a slot's buckets. */
#define TPS_AT(t) ((t)->nb + 1)
#define TTFT_AT(t) (TPS_AT(t) + (t)->ntps + 1)
#define GAP_AT(t) (TTFT_AT(t) + (t)->nb + 1)
#define NBUCKETS(t) (GAP_AT(t) + (t)->ngap + 1)

/* bisect.bisect_left over doubles: the first i with bounds[i] >= x (NaN: 0, as in Python). */
static Py_ssize_t bisect_left(const double *bounds, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (bounds[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static int read_bounds(PyObject *given, double **out, Py_ssize_t *n) {
    PyObject *seq = PySequence_Fast(given, "bounds must be a sequence of floats");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t size = PySequence_Fast_GET_SIZE(seq);
    double *bounds = PyMem_Malloc(sizeof(double) * (size_t)(size > 0 ? size : 1));
    if (bounds == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (bounds[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(bounds);
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    *out = bounds;
    *n = size;
    return 0;
}

static int tally_init(Tally *self, PyObject *args, PyObject *kwds) {
    PyObject *bounds, *tps, *gaps = NULL;
    Py_ssize_t flush_at = 1;
    static char *kwlist[] = {"bounds", "tps_bounds", "flush_at", "gap_bounds", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$nO", kwlist, &bounds, &tps, &flush_at,
                                     &gaps)) {
        return -1;
    }
    if (flush_at < 1) {
        PyErr_SetString(PyExc_ValueError, "flush_at must be at least 1");
        return -1;
    }
    self->flush_at = flush_at;
    if (self->bounds != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Tally is initialised once");
        return -1;
    }
    if (read_bounds(bounds, &self->bounds, &self->nb) < 0 ||
        read_bounds(tps, &self->tps, &self->ntps) < 0) {
        return -1;
    }
    if (gaps == NULL) {
        self->gaps = PyMem_Malloc(sizeof(double));
        self->ngap = 0;
        return self->gaps == NULL ? (PyErr_NoMemory(), -1) : 0;
    }
    return read_bounds(gaps, &self->gaps, &self->ngap);
}

static void tally_dealloc(Tally *self) {
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Slot *s = &self->slots[i];
        PyMem_Free(s->buckets);
        Py_XDECREF(s->prompt_big);
        Py_XDECREF(s->completion_big);
        Py_XDECREF(s->run);
        Py_XDECREF(s->flush);
    }
    PyMem_Free(self->slots);
    PyMem_Free(self->bounds);
    PyMem_Free(self->tps);
    PyMem_Free(self->gaps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The slot at `index`, growing the array (zeroed) to hold it. NULL with an exception set. */
static Slot *slot_at(Tally *self, Py_ssize_t index) {
    if (index < 0 || index >= MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "slot %zd out of range", index);
        return NULL;
    }
    if (index >= self->nslots) {
        Py_ssize_t grown = self->nslots ? self->nslots : 8;
        while (grown <= index) {
            grown *= 2;
        }
        Slot *slots = PyMem_Realloc(self->slots, sizeof(Slot) * (size_t)grown);
        if (slots == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memset(slots + self->nslots, 0, sizeof(Slot) * (size_t)(grown - self->nslots));
        self->slots = slots;
        self->nslots = grown;
    }
    Slot *s = &self->slots[index];
    if (s->buckets == NULL) {
        s->buckets = PyMem_Calloc((size_t)NBUCKETS(self), sizeof(long long));
        if (s->buckets == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    return s;
}

/* The slot for `key`: the caller's dict, else miss(*key). -1 with an exception set. */
static Py_ssize_t slot_index(PyObject *index, PyObject *miss, PyObject *key) {
    PyObject *found = PyDict_GetItemWithError(index, key);
    if (found != NULL) {
        return PyLong_AsSsize_t(found);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *chosen = PyObject_Call(miss, key, NULL);
    if (chosen == NULL) {
        return -1;
    }
    Py_ssize_t i = PyLong_AsSsize_t(chosen);
    Py_DECREF(chosen);
    return i;
}

/* The key a batch saw last and its slot: a run of requests with the same labels (the common
 * case: one model, one tenant, all ok) skips the key tuple and the dict. miss() must give
 * equal keys the same slot, which a caller's dict of slots does by construction. */
typedef struct {
    PyObject *key;
    Py_ssize_t slot;
} Last;

/* The slot of the key made of `n` items (new references, taken over). -1 with an exception. */
static Py_ssize_t lookup(PyObject *index, PyObject *miss, PyObject **items, Py_ssize_t n,
                         Last *last) {
    if (last->key != NULL) {
        Py_ssize_t k = 0;
        while (k < n && same_item(items[k], PyTuple_GET_ITEM(last->key, k))) {
            k++;
        }
        if (k == n) {
            for (k = 0; k < n; k++) {
                Py_DECREF(items[k]);
            }
            return last->slot;
        }
    }
    PyObject *key = PyTuple_New(n);
    if (key == NULL) {
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_DECREF(items[k]);
        }
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyTuple_SET_ITEM(key, k, items[k]);
    }
    Py_ssize_t at = slot_index(index, miss, key);
    if (at < 0) {
        Py_DECREF(key);
        return at;
    }
    Py_XSETREF(last->key, key);
    last->slot = at;
    return at;
}

/* The parts of one outcome, read (and converted) before any slot is touched: Python code run
 * by a conversion or by miss() may grow the slot array. */
typedef struct {
    PyObject *latency; /* new reference */
    double seconds;
    int has_tokens;
    long long prompt, completion;
    int prompt_over, completion_over; /* 1: the value is past 64 bits (positive) */
    PyObject *prompt_obj, *completion_obj; /* new references when has_tokens */
    int has_rate;
    double rate;
    int has_ttft;
    double ttft;
    PyObject *stamps; /* a list of exact floats (new reference), or NULL */
} Parts;

static void parts_clear(Parts *p) {
    Py_XDECREF(p->stamps);
    Py_XDECREF(p->latency);
    Py_XDECREF(p->prompt_obj);
    Py_XDECREF(p->completion_obj);
}

static int as_seconds(PyObject *value, double *out) {
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
        return 0;
    }
    *out = PyFloat_AsDouble(value);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int as_count(PyObject *value, long long *out, int *over) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a token count must be an int, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    *over = overflow > 0;
    if (overflow < 0) {
        *out = -1; /* far below zero: not counted, like any count <= 0 */
    }
    return 0;
}

/* o.<name>, or None when o has no such attribute (a plain record that was never streamed). */
static PyObject *optional_attr(PyObject *o, size_t offset, PyObject *name) {
    PyObject *v = outcome_attr(o, offset, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    return v;
}

/* The TTFT and chunk stamps of a streamed answer (both None otherwise). */
static int read_stream(PyObject *o, Parts *p) {
    PyObject *ttft = optional_attr(o, offsetof(Outcome, ttft), s_ttft);
    if (ttft == NULL) {
        return -1;
    }
    int rc = 0;
    if (ttft != Py_None) {
        p->has_ttft = 1;
        rc = as_seconds(ttft, &p->ttft);
    }
    Py_DECREF(ttft);
    if (rc < 0) {
        return -1;
    }
    PyObject *stamps = optional_attr(o, offsetof(Outcome, stamps), s_stamps);
    if (stamps == NULL) {
        return -1;
    }
    if (stamps == Py_None) {
        Py_DECREF(stamps);
        return 0;
    }
    if (!PyList_Check(stamps)) {
        Py_DECREF(stamps);
        PyErr_SetString(PyExc_TypeError, "stamps must be a list of floats");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(stamps); i++) {
        if (!PyFloat_CheckExact(PyList_GET_ITEM(stamps, i))) {
            Py_DECREF(stamps);
            PyErr_SetString(PyExc_TypeError, "stamps must be a list of floats");
            return -1;
        }
    }
    p->stamps = stamps;
    return 0;
}

/* prompt, completion and generation of a request that reported usage (completion not None). */
/* An int subclass as an exact int, so that adding it to a total runs no Python code (apply
 * may not: Python code could grow the slot array under it). */
static int exact_int(PyObject **value) {
    if (*value == Py_None || PyLong_CheckExact(*value)) {
        return 0;
    }
    PyObject *exact = PyNumber_Index(*value); /* an int subclass: a copy, no __index__ call */
    if (exact == NULL) {
        return -1;
    }
    Py_SETREF(*value, exact);
    return 0;
}

static int read_tokens(PyObject *o, PyObject *completion, Parts *p) {
    p->has_tokens = 1;
    Py_INCREF(completion);
    p->completion_obj = completion;
    if (as_count(completion, &p->completion, &p->completion_over) < 0 ||
        exact_int(&p->completion_obj) < 0) {
        return -1;
    }
    p->prompt_obj = OUTCOME_ATTR(o, prompt, s_prompt);
    if (p->prompt_obj == NULL) {
        return -1;
    }
    if (p->prompt_obj != Py_None && (as_count(p->prompt_obj, &p->prompt, &p->prompt_over) < 0 ||
                                     exact_int(&p->prompt_obj) < 0)) {
        return -1;
    }
    if (p->completion <= 0 && !p->completion_over) {
        return 0;
    }
    PyObject *generation = OUTCOME_ATTR(o, generation, s_generation);
    if (generation == NULL) {
        return -1;
    }
    double g;
    int rc = as_seconds(generation, &g);
    if (rc == 0 && g > 0.0) {
        p->has_rate = 1;
        if (PyFloat_CheckExact(generation) && !p->completion_over) {
            p->rate = (double)p->completion / g; /* int / float: the int correctly rounded */
        } else { /* an int generation, or a huge count: Python's own division */
            PyObject *rate = PyNumber_TrueDivide(completion, generation);
            rc = rate == NULL ? -1 : as_seconds(rate, &p->rate);
            Py_XDECREF(rate);
        }
    }
    Py_DECREF(generation);
    return rc;
}

static int add_big(PyObject **big, PyObject *value) {
    if (*big == NULL) {
        Py_INCREF(value);
        *big = value;
        return 0;
    }
    PyObject *sum = PyNumber_Add(*big, value);
    if (sum == NULL) {
        return -1;
    }
    Py_SETREF(*big, sum);
    return 0;
}

/* total += value (value > 0), spilling past 64 bits into *big. */
static int add_count(long long *total, PyObject **big, long long value, int over, PyObject *obj) {
    if (over) {
        return add_big(big, obj);
    }
    if (value <= 0) {
        return 0;
    }
    long long sum;
    if (__builtin_add_overflow(*total, value, &sum)) {
        return add_big(big, obj);
    }
    *total = sum;
    return 0;
}

/* Everything an outcome adds to its slot; runs no Python code. */
static int apply(Tally *self, Slot *s, Parts *p, PyObject *flushed) {
    s->dirty = 1;
    s->count++;
    s->sum += p->seconds;
    s->buckets[bisect_left(self->bounds, self->nb, p->seconds)]++;
    if (p->has_tokens) {
        s->tokens_seen = 1;
        if (add_count(&s->prompt, &s->prompt_big, p->prompt, p->prompt_over, p->prompt_obj) < 0 ||
            add_count(&s->completion, &s->completion_big, p->completion, p->completion_over,
                      p->completion_obj) < 0) {
            return -1;
        }
        if (p->has_rate) {
            s->buckets[TPS_AT(self) + bisect_left(self->tps, self->ntps, p->rate)]++;
            s->tps_sum += p->rate;
        }
    }
    if (p->has_ttft || p->stamps != NULL) {
        s->streamed = 1;
    }
    if (p->has_ttft) {
        s->buckets[TTFT_AT(self) + bisect_left(self->bounds, self->nb, p->ttft)]++;
        s->ttft_sum += p->ttft;
    }
    if (p->stamps != NULL) { /* checked: exact floats, and no Python code ran since */
        PyObject *stamps = p->stamps;
        for (Py_ssize_t i = 1; i < PyList_GET_SIZE(stamps); i++) {
            double gap = PyFloat_AS_DOUBLE(PyList_GET_ITEM(stamps, i)) -
                         PyFloat_AS_DOUBLE(PyList_GET_ITEM(stamps, i - 1));
            s->buckets[GAP_AT(self) + bisect_left(self->gaps, self->ngap, gap)]++;
            s->gap_sum += gap;
        }
    }
    if (s->run != NULL) {
        if (PyList_Append(s->run, p->latency) < 0) {
            return -1;
        }
        if (PyList_GET_SIZE(s->run) == self->flush_at && s->flush != NULL) {
            return PyList_Append(flushed, s->flush);
        }
    }
    return 0;
}

/* One item of a batch into its slot; -1 with an exception set. `last` carries the key a batch
 * saw last, `flushed` collects what the runs that filled name. */
typedef int (*AddOne)(Tally *self, PyObject *item, PyObject *index, PyObject *miss, Last *last,
                      PyObject *flushed);

static int add_request(Tally *self, PyObject *o, PyObject *index, PyObject *miss, Last *last,
                       PyObject *flushed) {
    PyObject *const names[5] = {s_route, s_model, s_tenant, s_status, s_reason};
    const size_t offsets[5] = {offsetof(Outcome, route), offsetof(Outcome, model),
                               offsetof(Outcome, tenant), offsetof(Outcome, status),
                               offsetof(Outcome, reason)};
    PyObject *items[5];
    int got = 0;
    while (got < 5 && (items[got] = outcome_attr(o, offsets[got], names[got])) != NULL) {
        got++;
    }
    if (got < 5) {
        for (int k = 0; k < got; k++) {
            Py_DECREF(items[k]);
        }
        return -1;
    }
    Py_ssize_t at = lookup(index, miss, items, 5, last);
    if (at < 0 && PyErr_Occurred()) {
        return -1;
    }
    Parts p = {0};
    p.latency = OUTCOME_ATTR(o, latency, s_latency);
    int ok = p.latency != NULL && as_seconds(p.latency, &p.seconds) == 0;
    PyObject *completion = ok ? OUTCOME_ATTR(o, completion, s_completion) : NULL;
    ok = completion != NULL && (completion == Py_None || read_tokens(o, completion, &p) == 0);
    Py_XDECREF(completion);
    ok = ok && read_stream(o, &p) == 0;
    Slot *s = ok ? slot_at(self, at) : NULL;
    ok = s != NULL && apply(self, s, &p, flushed) == 0;
    parts_clear(&p);
    return ok ? 0 : -1;
}

static int add_attempt(Tally *self, PyObject *item, PyObject *index, PyObject *miss, Last *last,
                       PyObject *flushed) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        PyErr_SetString(PyExc_TypeError, "an attempt is an (endpoint, status, seconds) tuple");
        return -1;
    }
    PyObject *items[2] = {Py_NewRef(PyTuple_GET_ITEM(item, 0)),
                          Py_NewRef(PyTuple_GET_ITEM(item, 1))};
    Py_ssize_t at = lookup(index, miss, items, 2, last);
    if (at < 0 && PyErr_Occurred()) {
        return -1;
    }
    Parts p = {0};
    p.latency = Py_NewRef(PyTuple_GET_ITEM(item, 2));
    int ok = as_seconds(p.latency, &p.seconds) == 0;
    Slot *s = ok ? slot_at(self, at) : NULL;
    ok = s != NULL && apply(self, s, &p, flushed) == 0;
    parts_clear(&p);
    return ok ? 0 : -1;
}

/* add_requests and add_attempts: each item of the batch through `one`; returns the flushes.
 * METH_FASTCALL, the arguments checked by hand: called once a loop turn, where a
 * PyArg_ParseTuple format costs ~700 instructions a call. */
static PyObject *add_each(Tally *self, PyObject *const *args, Py_ssize_t nargs, const char *what,
                          AddOne one) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "takes 3 arguments (batch, index, miss), got %zd", nargs);
        return NULL;
    }
    PyObject *batch = args[0], *index = args[1], *miss = args[2];
    if (!PyDict_Check(index)) {
        PyErr_SetString(PyExc_TypeError, "index must be a dict");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(batch, what);
    if (seq == NULL) {
        return NULL;
    }
    PyObject *flushed = PyList_New(0);
    Last last = {NULL, -1};
    int ok = flushed != NULL;
    /* The size and the item are read afresh each time, and the item is held: miss() and a
     * conversion may run Python code, which could change the batch. */
    for (Py_ssize_t i = 0; ok && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        ok = one(self, item, index, miss, &last, flushed) == 0;
        Py_DECREF(item);
    }
    Py_XDECREF(last.key);
    Py_DECREF(seq);
    if (!ok) {
        Py_XDECREF(flushed);
        return NULL;
    }
    return flushed;
}

static PyObject *add_requests(Tally *self, PyObject *const *args, Py_ssize_t nargs) {
    return add_each(self, args, nargs, "outcomes must be a sequence", add_request);
}

static PyObject *add_attempts(Tally *self, PyObject *const *args, Py_ssize_t nargs) {
    return add_each(self, args, nargs, "attempts must be a sequence", add_attempt);
}

static PyObject *bind(Tally *self, PyObject *args) {
    Py_ssize_t at;
    PyObject *run, *flush;
    if (!PyArg_ParseTuple(args, "nO!O", &at, &PyList_Type, &run, &flush)) {
        return NULL;
    }
    Slot *s = slot_at(self, at);
    if (s == NULL) {
        return NULL;
    }
    Py_XSETREF(s->run, Py_NewRef(run));
    Py_XSETREF(s->flush, flush == Py_None ? NULL : Py_NewRef(flush)); /* None: say nothing */
    Py_RETURN_NONE;
}

static PyObject *counts_list(const long long *counts, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(counts[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* fast + big as one Python int */
static PyObject *total(long long fast, PyObject *big) {
    PyObject *v = PyLong_FromLongLong(fast);
    if (v == NULL || big == NULL) {
        return v;
    }
    PyObject *sum = PyNumber_Add(v, big);
    Py_DECREF(v);
    return sum;
}

/* Zero a slot once take() has handed its numbers over. */
static void reset(Tally *self, Slot *s) {
    s->dirty = 0;
    s->count = 0;
    s->sum = 0.0;
    memset(s->buckets, 0, sizeof(long long) * (size_t)NBUCKETS(self));
    s->tokens_seen = 0;
    s->prompt = s->completion = 0;
    Py_CLEAR(s->prompt_big);
    Py_CLEAR(s->completion_big);
    s->tps_sum = 0.0;
    s->streamed = 0;
    s->ttft_sum = s->gap_sum = 0.0;
}

/* (slot, count, sum, buckets, tokens_seen, prompt, completion, tps_sum, tps_buckets,
 *  streamed, ttft_sum, ttft_buckets, gap_sum, gap_buckets) */
#define ROW 14
static PyObject *row(Tally *self, Py_ssize_t i, Slot *s) {
    PyObject *row = PyTuple_New(ROW);
    if (row == NULL) {
        return NULL;
    }
    PyObject *items[ROW] = {
        PyLong_FromSsize_t(i),
        PyLong_FromLongLong(s->count),
        PyFloat_FromDouble(s->sum),
        counts_list(s->buckets, self->nb + 1),
        PyBool_FromLong(s->tokens_seen),
        total(s->prompt, s->prompt_big),
        total(s->completion, s->completion_big),
        PyFloat_FromDouble(s->tps_sum),
        counts_list(s->buckets + TPS_AT(self), self->ntps + 1),
        PyBool_FromLong(s->streamed),
        PyFloat_FromDouble(s->ttft_sum),
        counts_list(s->buckets + TTFT_AT(self), self->nb + 1),
        PyFloat_FromDouble(s->gap_sum),
        counts_list(s->buckets + GAP_AT(self), self->ngap + 1),
    };
    int ok = 1;
    for (int k = 0; k < ROW; k++) {
        ok = ok && items[k] != NULL;
        PyTuple_SET_ITEM(row, k, items[k]); /* a NULL item is fine for the DECREF below */
    }
    if (!ok) {
        Py_DECREF(row);
        return NULL;
    }
    return row;
}

static PyObject *take(Tally *self, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Slot *s = &self->slots[i];
        if (!s->dirty) {
            continue;
        }
        PyObject *r = row(self, i, s);
        int rc = r == NULL ? -1 : PyList_Append(out, r);
        Py_XDECREF(r);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
        reset(self, s);
    }
    return out;
}

static PyMethodDef tally_methods[] = {
    {"add_requests", (PyCFunction)(void (*)(void))add_requests, METH_FASTCALL,
     "add_requests(outcomes, index, miss) -> flushes of the runs that reached flush_at"},
    {"add_attempts", (PyCFunction)(void (*)(void))add_attempts, METH_FASTCALL,
     "add_attempts(attempts, index, miss) -> flushes of the runs that reached flush_at"},
    {"bind", (PyCFunction)bind, METH_VARARGS,
     "bind(slot, run, flush): where the slot's latencies go, and what says so"},
    {"take", (PyCFunction)take, METH_NOARGS,
     "take() -> [(slot, count, sum, buckets, tokens_seen, prompt, completion, tps_sum, "
     "tps_buckets, streamed, ttft_sum, ttft_buckets, gap_sum, gap_buckets)] of every slot "
     "touched since the last take, which zeroes them"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "headway.observe._speedups.Tally",
    .tp_basicsize = sizeof(Tally),
    .tp_dealloc = (destructor)tally_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per-slot counts, buckets, sums and token totals (see _tally.PyTally).",
    .tp_methods = tally_methods,
    .tp_init = (initproc)tally_init,
    .tp_new = PyType_GenericNew,
};

int tally_add_type(PyObject *module) {
#define INTERN(var, name) \
    if ((var = PyUnicode_InternFromString(name)) == NULL) return -1;
    INTERN(s_route, "route")
    INTERN(s_model, "model")
    INTERN(s_tenant, "tenant")
    INTERN(s_status, "status")
    INTERN(s_reason, "reason")
    INTERN(s_latency, "latency")
    INTERN(s_prompt, "prompt")
    INTERN(s_completion, "completion")
    INTERN(s_generation, "generation")
    INTERN(s_ttft, "ttft")
    INTERN(s_stamps, "stamps")
#undef INTERN
    if (PyType_Ready(&TallyType) < 0) {
        return -1;
    }
    Py_INCREF(&TallyType);
    if (PyModule_AddObject(module, "Tally", (PyObject *)&TallyType) < 0) {
        Py_DECREF(&TallyType);
        return -1;
    }
    return 0;
}
