/*
 * binding.h -- private to the corrsteer.core._core extension (csrc/python: binding.c,
 * py_args.c, py_pooler.c, py_accumulator.c); the C library under csrc/ never sees it.
 * Include it first in those files, before any system header (Python.h must come
 * first).
 *
 * NumPy's C API table is one global shared by the four files through
 * PY_ARRAY_UNIQUE_SYMBOL (NumPy >= 2 marks it hidden, so it stays inside _core.so).
 * binding.c defines CS_PY_IMPORT_ARRAY before including this header: it alone
 * defines the table and fills it with import_array() in PyInit__core; every other
 * file gets NO_IMPORT_ARRAY and so only an extern declaration.
 *
 * Shared names carry a cs_py_ prefix so they cannot clash with the C library's cs_*.
 */
#ifndef CORRSTEER_BINDING_H
#define CORRSTEER_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL cs_py_ARRAY_API
#ifndef CS_PY_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "corrsteer.h"

/* Keep the shared names out of _core.so's dynamic symbol table, as `static` did when
 * they all lived in binding.c: PyInit__core stays the binding's only exported name. */
#if defined(__GNUC__) && !defined(_WIN32)
#define CS_PY_INTERNAL __attribute__((visibility("hidden")))
#else
#define CS_PY_INTERNAL
#endif

#define DIM(a, i) ((int64_t)PyArray_DIM((a), (i)))

/* Map a failed cs_status to an exception ("<what>: <reason>"); always returns NULL. */
CS_PY_INTERNAL PyObject *cs_py_raise_status(cs_status st, const char *what);
/* The same, with the core's detail appended ("<what>: <reason>: <detail>") when
 * detail is neither NULL nor empty. */
CS_PY_INTERNAL PyObject *cs_py_raise_detail(cs_status st, const char *what, const char *detail);

/* ---- py_args.c */

/* Convert obj to an aligned C-contiguous array of type; NULL (exception set) on failure. */
CS_PY_INTERNAL PyArrayObject *cs_py_as_array(PyObject *obj, int type, int ndim, const char *name);

/* Set *busy, or raise RuntimeError if state (the object's C handle) is NULL or another
 * thread holds it; call with the GIL held. */
CS_PY_INTERNAL int cs_py_claim(const void *state, int *busy, const char *what);

/* An SAE argument tuple from corrsteer.core.kernels.sae_args: the arrays it holds and the C view. */
typedef struct {
    PyArrayObject *W_enc, *b_enc, *b_dec, *threshold;
    cs_sae view;
} cs_py_sae_refs;

CS_PY_INTERNAL int cs_py_sae_parse(PyObject *args, cs_py_sae_refs *s);
CS_PY_INTERNAL void cs_py_sae_release(cs_py_sae_refs *s);
CS_PY_INTERNAL int cs_py_check_x(PyArrayObject *x, const cs_py_sae_refs *s, const char *name);
/* x (n, d_in) float32 and seq (n,) of any integer dtype, the same length, x checked
 * against the SAE and every seq value in [-1, n_seq) *before* it becomes the int64
 * array *seq (a uint64 2**64 - 1 must not wrap to -1, "skip the row"); -1 with an
 * exception set (the caller releases whatever was set in *x and *seq). */
CS_PY_INTERNAL int cs_py_rows_and_seq(PyObject *x_obj, PyObject *seq_obj, const cs_py_sae_refs *s,
                                      int64_t n_seq, PyArrayObject **x, PyArrayObject **seq);

CS_PY_INTERNAL extern PyTypeObject cs_py_PoolerType;       /* py_pooler.c */
CS_PY_INTERNAL extern PyTypeObject cs_py_AccumulatorType;  /* py_accumulator.c */

#endif /* CORRSTEER_BINDING_H */
