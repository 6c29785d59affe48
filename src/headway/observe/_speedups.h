/* What the parts of headway.observe._speedups share. */
#ifndef HEADWAY_SPEEDUPS_H
#define HEADWAY_SPEEDUPS_H
#include <Python.h>

/* Adds the Tally type (_speedups_tally.c) to the module; -1 with an exception set. */
int tally_add_type(PyObject *module);

#endif
