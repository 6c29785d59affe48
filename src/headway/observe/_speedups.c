/* The observability hot loops in C: access-log lines for a batch of request outcomes, and the
 * DDSketch bin updates for a batch of values.
 *
 * Why: a line built as a dict and serialised by orjson costs ~16k instructions per request in
 * the gateway (bench/instructions.py), a third of what observability costs. This writes the
 * same bytes directly (the Python path in _accesslog.py is the reference; the tests compare
 * them byte for byte), reading each outcome's attributes once.
 *
 * format_lines(ts, outcomes, models, other, decisions) -> bytes
 *   ts:        the batch's time stamp as JSON text (a quoted string), shared by every line
 *   outcomes:  a list of objects with the attributes AccessLog.write_outcomes reads
 *   models:    the model allow-list (a frozenset); a model outside it is logged as `other`
 *   decisions: decision_reasons(attributes) -> list[str], called only for non-empty attributes
 * Raises TypeError on a value of an unexpected type; the caller then formats in Python.
 * iso_utc(seconds) -> bytes: that time stamp from the wall clock, as orjson writes a datetime.
 * add_gaps(counts, bounds, stamps) -> total: a stream's chunk gaps into a histogram.
 *
 * The Tally (_speedups_tally.c) and Outcome (_speedups_outcome.c) types live beside them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "_speedups.h"

/* The lines are written straight into a bytes object, grown as needed and cut to size at the
 * end: the batch (~60 KB at saturation) is not copied once more into the result. */
typedef struct {
    PyObject *bytes;
    char *data;
    Py_ssize_t size;
    Py_ssize_t cap;
} Buf;

/* The slow half of buf_reserve: grow the buffer (doubling). */
static int buf_grow(Buf *b, Py_ssize_t more) {
    Py_ssize_t cap = b->cap ? b->cap : 512;
    while (cap < b->size + more) {
        cap *= 2;
    }
    if (b->bytes == NULL) {
        b->bytes = PyBytes_FromStringAndSize(NULL, cap);
    } else if (_PyBytes_Resize(&b->bytes, cap) < 0) {
        b->bytes = NULL; /* _PyBytes_Resize dropped it */
    }
    if (b->bytes == NULL) {
        b->data = NULL;
        b->size = b->cap = 0;
        return -1;
    }
    b->data = PyBytes_AS_STRING(b->bytes);
    b->cap = cap;
    return 0;
}

/* The lines written so far, as bytes (the buffer is given away), or NULL. */
static PyObject *buf_finish(Buf *b) {
    if (b->bytes == NULL) {
        return PyBytes_FromStringAndSize("", 0);
    }
    PyObject *result = b->bytes;
    b->bytes = NULL;
    if (_PyBytes_Resize(&result, b->size) < 0) {
        return NULL;
    }
    return result;
}

/* Inlined everywhere: a literal's put is then a size check and a few moves (memcpy of a
 * constant size), not two calls. */
#define HOT static inline __attribute__((always_inline))

HOT int buf_reserve(Buf *b, Py_ssize_t more) {
    return b->size + more <= b->cap ? 0 : buf_grow(b, more);
}

HOT int put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->size, s, (size_t)n);
    b->size += n;
    return 0;
}

#define PUT_LIT(b, lit) put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* Whether any of the 8 bytes of w needs escaping in JSON: below 0x20, '"' or '\\'. The
 * classic word-at-a-time tests (a zero byte of w ^ c has the 0x80 bit set by the subtraction,
 * and so does a byte below 0x20); they can only err towards "yes", never miss one. */
HOT int word_needs_escape(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
    uint64_t t = ((w - ones * 0x20) | (quote - ones) | (slash - ones)) & ~w & high;
    return t != 0;
}

/* A JSON string, escaped the way orjson escapes it: \" \\ \b \t \n \f \r, \u00XX for the other
 * control characters, everything else (UTF-8 included) as is. A string with nothing to escape
 * (the usual id or label) is checked eight bytes at a time and copied in one move. */
static int put_str(Buf *b, PyObject *value) {
    if (value == Py_None) {
        return PUT_LIT(b, "null");
    }
    if (!PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected str or None");
        return -1;
    }
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_IS_COMPACT_ASCII(value)) { /* the usual label: its bytes are its UTF-8 */
        s = (const char *)PyUnicode_DATA(value);
        n = PyUnicode_GET_LENGTH(value);
    } else if ((s = PyUnicode_AsUTF8AndSize(value, &n)) == NULL) {
        return -1;
    }
    if (buf_reserve(b, n * 6 + 2) < 0) {
        return -1;
    }
    char *out = b->data + b->size;
    *out++ = '"';
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (word_needs_escape(w)) {
            break;
        }
        memcpy(out, &w, 8);
        out += 8;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\b': *out++ = 'b'; break;
            case '\t': *out++ = 't'; break;
            case '\n': *out++ = 'n'; break;
            case '\f': *out++ = 'f'; break;
            case '\r': *out++ = 'r'; break;
            default: {
                static const char hex[] = "0123456789abcdef";
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = hex[c >> 4];
                *out++ = hex[c & 0xf];
            }
        }
    }
    *out++ = '"';
    b->size = out - b->data;
    return 0;
}

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The decimal digits of v, written so that they end just before `end`; returns where they
 * start. Two digits a step from a table: snprintf costs ~1k instructions a call, this ~20. */
HOT char *digits_before(char *end, unsigned long long v) {
    while (v >= 100) {
        unsigned long long q = v / 100;
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * (v - q * 100), 2);
        v = q;
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * v, 2);
    } else {
        *--end = (char)('0' + v);
    }
    return end;
}

/* An exact int as a C long long: a one-digit int (every count and status here) read straight
 * from its digit, else through PyLong_AsLongLong. */
HOT long long small_long(PyObject *value) {
#if PY_VERSION_HEX < 0x030C0000
    Py_ssize_t size = Py_SIZE(value);
    if (size == 0) {
        return 0;
    }
    if (size == 1 || size == -1) {
        long long digit = (long long)((PyLongObject *)value)->ob_digit[0];
        return size < 0 ? -digit : digit;
    }
#endif
    return PyLong_AsLongLong(value);
}

static int put_int(Buf *b, PyObject *value) {
    if (value == Py_None) {
        return PUT_LIT(b, "null");
    }
    if (!PyLong_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "expected int or None");
        return -1;
    }
    long long v = small_long(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    char tmp[24];
    char *end = tmp + sizeof(tmp);
    char *start = digits_before(end, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);
    if (v < 0) {
        *--start = '-';
    }
    return put(b, start, end - start);
}

/* Seconds as milliseconds to the microsecond: round(seconds * 1e6) / 1000, with Python's
 * round-half-even (rint's, in the default rounding mode), printed as Python's repr of the
 * float (orjson's text for these values). */
static int put_ms(Buf *b, PyObject *value) {
    if (value == Py_None) {
        return PUT_LIT(b, "null");
    }
    if (!PyFloat_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "expected float or None");
        return -1;
    }
    double x = PyFloat_AS_DOUBLE(value) * 1e6;
    if (!isfinite(x)) {
        PyErr_SetString(PyExc_TypeError, "expected a finite float");
        return -1;
    }
    double r = rint(x);
    if (r >= 0 && r < 1e15) {
        /* r microseconds: r / 1000 has at most three decimals, so the shortest text that
         * round-trips (repr's, orjson's) is those decimals without trailing zeros, or ".0". */
        unsigned long long us = (unsigned long long)r;
        unsigned long long ms = us / 1000, frac = us - ms * 1000;
        char tmp[40];
        char *end = tmp + 24;
        char *start = digits_before(end, ms);
        *end++ = '.';
        *end++ = (char)('0' + frac / 100);
        unsigned long long rest = frac % 100;
        if (rest) {
            memcpy(end, DIGIT_PAIRS + 2 * rest, 2);
            end += rest % 10 ? 2 : 1;
        }
        return put(b, start, end - start);
    }
    char *text = PyOS_double_to_string(r / 1000.0, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) {
        return -1;
    }
    int rc = put(b, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return rc;
}

static PyObject *s_request_id, *s_tenant, *s_route, *s_model, *s_endpoint, *s_status, *s_reason,
    *s_latency, *s_ttft, *s_prompt, *s_completion, *s_stream, *s_attributes, *s_trace_id;

/* One field: `,"name":` then the value written by `writer`; a new reference is dropped. */
#define FIELD(lit, attr, writer)                      \
    do {                                              \
        PyObject *v_ = OUTCOME_ATTR(o, attr, s_##attr); \
        if (v_ == NULL) goto fail;                    \
        int rc_ = PUT_LIT(&b, lit) < 0 ? -1 : writer(&b, v_); \
        Py_DECREF(v_);                                \
        if (rc_ < 0) goto fail;                       \
    } while (0)

/* The fields a line's labels fill, in order: tenant, route, model, endpoint, status, reason. */
static PyObject **const label_names[6] = {&s_tenant, &s_route, &s_model,
                                          &s_endpoint, &s_status, &s_reason};
static const size_t label_offsets[6] = {offsetof(Outcome, tenant),   offsetof(Outcome, route),
                                        offsetof(Outcome, model),    offsetof(Outcome, endpoint),
                                        offsetof(Outcome, status),   offsetof(Outcome, reason)};

/* `,"tenant":...,"reason":...` from the six label values; a model outside `models` is `other`. */
static int write_labels(Buf *b, PyObject **labels, PyObject *models, PyObject *other) {
    if (PUT_LIT(b, ",\"tenant\":") < 0 || put_str(b, labels[0]) < 0 ||
        PUT_LIT(b, ",\"route\":") < 0 || put_str(b, labels[1]) < 0 ||
        PUT_LIT(b, ",\"model\":") < 0) {
        return -1;
    }
    PyObject *model = labels[2];
    if (model == Py_None) {
        if (PUT_LIT(b, "null") < 0) {
            return -1;
        }
    } else {
        int known = PySet_Contains(models, model);
        if (known < 0 || put_str(b, known ? model : other) < 0) {
            return -1;
        }
    }
    if (PUT_LIT(b, ",\"endpoint\":") < 0 || put_str(b, labels[3]) < 0 ||
        PUT_LIT(b, ",\"status\":") < 0 || put_int(b, labels[4]) < 0 ||
        PUT_LIT(b, ",\"reason\":") < 0 || put_str(b, labels[5]) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *format_lines(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* METH_FASTCALL, the arguments checked by hand: called once a loop turn, where a
     * PyArg_ParseTuple format costs ~700 instructions a call. */
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "format_lines takes 5 arguments, got %zd", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "format_lines: ts must be bytes and other a str");
        return NULL;
    }
    const char *ts = PyBytes_AS_STRING(args[0]);
    Py_ssize_t ts_len = PyBytes_GET_SIZE(args[0]);
    PyObject *outcomes = args[1], *models = args[2], *other = args[3], *decisions = args[4];
    PyObject *seq = PySequence_Fast(outcomes, "outcomes must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Buf b = {NULL, NULL, 0, 0};
    if (!PyAnySet_Check(models)) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_TypeError, "models must be a set or frozenset");
        return NULL;
    }
    /* A line with short labels takes ~300 bytes: one allocation for the usual batch. */
    if (buf_reserve(&b, 320 * (PySequence_Fast_GET_SIZE(seq) + 1)) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *o = NULL;
    PyObject *previous[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    Py_ssize_t fragment_at = -1, fragment_len = 0;
    /* The size and the item are read afresh each time, and the item is held: attribute
     * getters and the decisions callback run Python code, which could change the list. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        o = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(o);
        if (PUT_LIT(&b, "{\"ts\":") < 0 || put(&b, ts, ts_len) < 0) goto fail;
        FIELD(",\"request_id\":", request_id, put_str);
        {
            /* The labels: a run of lines with equal ones (the usual batch) copies the text the
             * first of them wrote. */
            PyObject *labels[6];
            int got = 0;
            while (got < 6 && (labels[got] = outcome_attr(o, label_offsets[got],
                                                          *label_names[got])) != NULL) {
                got++;
            }
            int rc = got == 6 ? 0 : -1;
            int same = rc == 0 && fragment_at >= 0;
            for (int k = 0; same && k < 6; k++) {
                same = same_item(labels[k], previous[k]);
            }
            if (same) {
                rc = buf_reserve(&b, fragment_len);
                if (rc == 0) { /* reserved first: the copy's source cannot move under it */
                    memcpy(b.data + b.size, b.data + fragment_at, (size_t)fragment_len);
                    b.size += fragment_len;
                }
            } else if (rc == 0) {
                Py_ssize_t start = b.size;
                rc = write_labels(&b, labels, models, other);
                fragment_at = rc == 0 ? start : -1;
                fragment_len = b.size - start;
                for (int k = 0; k < 6; k++) {
                    Py_XSETREF(previous[k], Py_NewRef(labels[k]));
                }
            }
            for (int k = 0; k < got; k++) {
                Py_DECREF(labels[k]);
            }
            if (rc < 0) goto fail;
        }
        FIELD(",\"latency_ms\":", latency, put_ms);
        FIELD(",\"ttft_ms\":", ttft, put_ms);
        FIELD(",\"prompt_tokens\":", prompt, put_int);
        FIELD(",\"completion_tokens\":", completion, put_int);
        {
            PyObject *stream = OUTCOME_ATTR(o, stream, s_stream);
            if (stream == NULL) goto fail;
            int rc;
            if (stream == Py_True) {
                rc = PUT_LIT(&b, ",\"stream\":true");
            } else if (stream == Py_False) {
                rc = PUT_LIT(&b, ",\"stream\":false");
            } else {
                PyErr_SetString(PyExc_TypeError, "expected bool");
                rc = -1;
            }
            Py_DECREF(stream);
            if (rc < 0) goto fail;
        }
        {
            PyObject *attributes = OUTCOME_ATTR(o, attributes, s_attributes);
            if (attributes == NULL) goto fail;
            int truthy = attributes == Py_None ? 0 : PyObject_IsTrue(attributes);
            if (truthy < 0 || PUT_LIT(&b, ",\"decisions\":[") < 0) {
                Py_DECREF(attributes);
                goto fail;
            }
            if (truthy) {
                PyObject *list = PyObject_CallOneArg(decisions, attributes);
                if (list == NULL || !PyList_Check(list)) {
                    if (list != NULL) {
                        PyErr_SetString(PyExc_TypeError, "decisions must return a list");
                        Py_DECREF(list);
                    }
                    Py_DECREF(attributes);
                    goto fail;
                }
                for (Py_ssize_t k = 0; k < PyList_GET_SIZE(list); k++) {
                    if ((k && PUT_LIT(&b, ",") < 0) || put_str(&b, PyList_GET_ITEM(list, k)) < 0) {
                        Py_DECREF(list);
                        Py_DECREF(attributes);
                        goto fail;
                    }
                }
                Py_DECREF(list);
            }
            Py_DECREF(attributes);
            if (PUT_LIT(&b, "]") < 0) goto fail;
        }
        {
            PyObject *trace = OUTCOME_ATTR(o, trace_id, s_trace_id);
            if (trace == NULL) goto fail;
            int rc = 0;
            if (trace != Py_None) {
                rc = PUT_LIT(&b, ",\"trace_id\":") < 0 ? -1 : put_str(&b, trace);
            }
            Py_DECREF(trace);
            if (rc < 0) goto fail;
        }
        if (PUT_LIT(&b, "}\n") < 0) goto fail;
        Py_CLEAR(o);
    }
    Py_DECREF(seq);
    for (int k = 0; k < 6; k++) {
        Py_XDECREF(previous[k]);
    }
    return buf_finish(&b);
fail:
    Py_XDECREF(o);
    Py_DECREF(seq);
    for (int k = 0; k < 6; k++) {
        Py_XDECREF(previous[k]);
    }
    Py_XDECREF(b.bytes);
    return NULL;
}

/* add_to_counts(counts, offset, collapsed, values, inv_log_gamma, min_value)
 *     -> (zeros, smallest, largest, total) | (lo, hi)
 * DDSketch.add_many's loop over its dense store: each value above min_value counts once in
 * counts[ceil(log(v) * inv) - offset] (the same libm log and ceil as math.log and math.ceil, so
 * the same buckets; below offset the first, once collapsed); returns how many were at or below
 * min_value, and the smallest and largest value and their sum with negatives counted as 0 (as
 * min(), max() and sum() of the list would, in the same order). When some bucket is outside the
 * array, nothing is counted and (lowest, highest) bucket of the values comes back: the caller
 * grows the array and calls again. counts is an
 * array('q'), written through the buffer protocol: ~60 instructions a value, against ~700 with
 * a dict of buckets. The reference is _python_add_to_counts in _sketch.py. */
static PyObject *add_to_counts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "add_to_counts takes 6 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *counts = args[0], *values = args[3];
    if (!PyList_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "add_to_counts: values must be a list");
        return NULL;
    }
    long long offset = PyLong_AsLongLong(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int collapsed = PyObject_IsTrue(args[2]);
    double inv = PyFloat_AsDouble(args[4]);
    double floor_value = PyFloat_AsDouble(args[5]);
    if (collapsed < 0 || ((inv == -1.0 || floor_value == -1.0) && PyErr_Occurred())) {
        return NULL;
    }
    /* Keys first (a non-float item's __float__ is Python code, which may change the list: its
     * size is read afresh), then the range check, then the counting: all or nothing. */
    Py_ssize_t n = PyList_GET_SIZE(values);
    long long *keys = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(long long));
    if (keys == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t used = 0;
    long long zeros = 0, lo = 0, hi = 0;
    double smallest = INFINITY, largest = -INFINITY, total = 0.0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values) && used < n; i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        double x;
        if (PyFloat_CheckExact(item)) {
            x = PyFloat_AS_DOUBLE(item);
        } else {
            Py_INCREF(item);
            x = PyFloat_AsDouble(item);
            Py_DECREF(item);
            if (x == -1.0 && PyErr_Occurred()) {
                PyMem_Free(keys);
                return NULL;
            }
        }
        double kept = x < 0.0 ? 0.0 : x;
        if (kept < smallest) {
            smallest = kept;
        }
        if (kept > largest) {
            largest = kept;
        }
        total += kept;
        if (!(x > floor_value)) {
            zeros++;
            continue;
        }
        double index = ceil(log(x) * inv);
        if (!isfinite(index) || fabs(index) > 9.0e15) {
            PyMem_Free(keys);
            PyErr_SetString(PyExc_ValueError, "value out of range for a sketch");
            return NULL;
        }
        long long key = (long long)index;
        if (used == 0 || key < lo) {
            lo = key;
        }
        if (used == 0 || key > hi) {
            hi = key;
        }
        keys[used++] = key;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(counts, &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyMem_Free(keys);
        return NULL;
    }
    if (view.itemsize != (Py_ssize_t)sizeof(long long) || view.format == NULL ||
        strcmp(view.format, "q") != 0) {
        PyBuffer_Release(&view);
        PyMem_Free(keys);
        PyErr_SetString(PyExc_TypeError, "add_to_counts: counts must be an array('q')");
        return NULL;
    }
    long long size = (long long)(view.len / view.itemsize);
    if (used > 0 && (hi >= offset + size || (lo < offset && !collapsed))) {
        PyBuffer_Release(&view);
        PyMem_Free(keys);
        return Py_BuildValue("(LL)", lo, hi);
    }
    long long *slot = (long long *)view.buf;
    for (Py_ssize_t i = 0; i < used; i++) {
        long long at = keys[i] - offset;
        slot[at < 0 ? 0 : at]++;
    }
    PyBuffer_Release(&view);
    PyMem_Free(keys);
    return Py_BuildValue("(Lddd)", zeros, smallest, largest, total);
}

/* add_gaps(counts, bounds, stamps) -> total
 * A stream's inter-chunk gaps into a histogram: for each consecutive pair of stamps, the gap
 * counts once in counts[bisect_left(bounds, gap)]; returns the sum of the gaps (the caller adds
 * it to the histogram's sum). The reference is _python_add_gaps in _metrics.py. */
static PyObject *add_gaps(PyObject *self, PyObject *args) {
    PyObject *counts, *bounds, *stamps;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &counts, &PyTuple_Type, &bounds,
                          &PyList_Type, &stamps)) {
        return NULL;
    }
    Py_ssize_t nb = PyTuple_GET_SIZE(bounds);
    if (PyList_GET_SIZE(counts) != nb + 1) {
        PyErr_SetString(PyExc_ValueError, "counts must have one more item than bounds");
        return NULL;
    }
    double total = 0.0, previous = 0.0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(stamps); i++) {
        PyObject *item = PyList_GET_ITEM(stamps, i);
        if (!PyFloat_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "stamps must be floats");
            return NULL;
        }
        double stamp = PyFloat_AS_DOUBLE(item);
        if (i > 0) {
            double gap = stamp - previous;
            Py_ssize_t lo = 0, hi = nb;
            while (lo < hi) {
                Py_ssize_t mid = (lo + hi) / 2;
                PyObject *bound = PyTuple_GET_ITEM(bounds, mid);
                if (!PyFloat_CheckExact(bound)) {
                    PyErr_SetString(PyExc_TypeError, "bounds must be floats");
                    return NULL;
                }
                if (PyFloat_AS_DOUBLE(bound) < gap) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            PyObject *current = PyList_GET_ITEM(counts, lo);
            long long n = PyLong_AsLongLong(current);
            if (n == -1 && PyErr_Occurred()) {
                return NULL;
            }
            PyObject *updated = PyLong_FromLongLong(n + 1);
            if (updated == NULL) {
                return NULL;
            }
            PyList_SetItem(counts, lo, updated); /* steals updated, drops the old count */
            total += gap;
        }
        previous = stamp;
    }
    return PyFloat_FromDouble(total);
}

/* iso_utc(seconds) -> bytes: orjson.dumps(datetime.fromtimestamp(seconds, UTC),
 * option=OPT_UTC_Z), i.e. "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" with the quotes, with
 * fromtimestamp's own rounding (to the microsecond, half to even). ~300 instructions against
 * ~4.5k for the datetime and its serialisation. ValueError outside years 1970-9999 (the caller
 * then takes the datetime path). */
static PyObject *iso_utc(PyObject *self, PyObject *arg) {
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!(d >= 0.0 && d < 253402300800.0)) {
        PyErr_SetString(PyExc_ValueError, "timestamp out of range for iso_utc");
        return NULL;
    }
    double whole;
    double frac = modf(d, &whole) * 1e6;
    double r = round(frac);
    if (fabs(frac - r) == 0.5) {
        r = 2.0 * round(frac / 2.0);
    }
    if (r >= 1e6) {
        r -= 1e6;
        whole += 1.0;
    }
    time_t t = (time_t)whole;
    long us = (long)r;
    /* The '"YYYY-MM-DDTHH:MM:SS' part of the last second asked for: the access log asks many
     * times a second, and gmtime_r costs ~300 instructions. (The GIL guards these statics.) */
    static time_t cached_second = (time_t)-1;
    static char cached[21];
    char out[40];
    int n = 0;
    if (t != cached_second) {
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999) {
            PyErr_SetString(PyExc_ValueError, "timestamp out of range for iso_utc");
            return NULL;
        }
#define TWO(v) (out[n++] = (char)('0' + (v) / 10), out[n++] = (char)('0' + (v) % 10))
        int year = tm.tm_year + 1900;
        out[n++] = '"';
        TWO(year / 100);
        TWO(year % 100);
        out[n++] = '-';
        TWO(tm.tm_mon + 1);
        out[n++] = '-';
        TWO(tm.tm_mday);
        out[n++] = 'T';
        TWO(tm.tm_hour);
        out[n++] = ':';
        TWO(tm.tm_min);
        out[n++] = ':';
        TWO(tm.tm_sec);
#undef TWO
        memcpy(cached, out, 20);
        cached_second = t;
    } else {
        memcpy(out, cached, 20);
        n = 20;
    }
    if (us) {
        out[n++] = '.';
        for (long div = 100000; div; div /= 10) {
            out[n++] = (char)('0' + us / div % 10);
        }
    }
    out[n++] = 'Z';
    out[n++] = '"';
    return PyBytes_FromStringAndSize(out, n);
}

static PyMethodDef methods[] = {
    {"add_to_counts", (PyCFunction)(void (*)(void))add_to_counts, METH_FASTCALL,
     "add_to_counts(counts, offset, collapsed, values, inv_log_gamma, min_value) -> zeros | "
     "(lo, hi): DDSketch.add_many's loop over its dense store."},
    {"add_gaps", add_gaps, METH_VARARGS,
     "add_gaps(counts, bounds, stamps) -> total: a stream's chunk gaps into a histogram."},
    {"iso_utc", iso_utc, METH_O,
     "iso_utc(seconds) -> bytes: the UTC time as orjson writes a datetime (OPT_UTC_Z)."},
    {"record_outcome", (PyCFunction)(void (*)(void))record_outcome, METH_FASTCALL,
     "record_outcome(pending, start, now, route, tenant, model, endpoint, request_id, "
     "attributes, prompt, completion, trace, status, reason, stream, first, stamps) -> bool: "
     "an answer's Outcome, appended to pending (True: pending was empty)."},
    {"format_lines", (PyCFunction)(void (*)(void))format_lines, METH_FASTCALL,
     "format_lines(ts, outcomes, models, other, decisions) -> bytes: access-log lines."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "headway.observe._speedups",
    "Access-log lines and sketch buckets in C (_accesslog.py and _sketch.py hold the reference "
    "Python paths).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
#define INTERN(var, name) \
    if ((var = PyUnicode_InternFromString(name)) == NULL) return NULL;
    INTERN(s_request_id, "request_id")
    INTERN(s_tenant, "tenant")
    INTERN(s_route, "route")
    INTERN(s_model, "model")
    INTERN(s_endpoint, "endpoint")
    INTERN(s_status, "status")
    INTERN(s_reason, "reason")
    INTERN(s_latency, "latency")
    INTERN(s_ttft, "ttft")
    INTERN(s_prompt, "prompt")
    INTERN(s_completion, "completion")
    INTERN(s_stream, "stream")
    INTERN(s_attributes, "attributes")
    INTERN(s_trace_id, "trace_id")
#undef INTERN
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (tally_add_type(m) < 0 || outcome_add_type(m) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
