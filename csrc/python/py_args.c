/*
 * py_args.c -- argument conversion shared by the binding files (binding.h): arrays
 * of a given dtype and rank, the SAE tuple from corrsteer.core.kernels.sae_args, rows of x
 * checked against it, per-row sequence indices checked in their own dtype before
 * the cast to int64, and the busy flag that refuses a second thread.
 * No arithmetic and no policy: every value is either passed on or refused.
 */
#include "binding.h"

/* Convert obj to an aligned C-contiguous array of type; NULL (exception set) on failure. */
PyArrayObject *cs_py_as_array(PyObject *obj, int type, int ndim, const char *name)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, type, NPY_ARRAY_IN_ARRAY);
    if (a == NULL) return NULL;
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D, got %d-D", name, ndim, PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

/* ------------------------------------------------------------ busy flags */

/* Called with the GIL held, so test-and-set cannot interleave between threads. */
int cs_py_claim(const void *state, int *busy, const char *what)
{
    if (state == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s is not initialised", what);
        return -1;
    }
    if (*busy) {
        PyErr_Format(PyExc_RuntimeError, "this %s is being used from another thread; give each "
                     "thread its own %s or guard it with a lock", what, what);
        return -1;
    }
    *busy = 1;
    return 0;
}

/* ------------------------------------------------------------------ SAE */

void cs_py_sae_release(cs_py_sae_refs *s)
{
    Py_XDECREF(s->W_enc); Py_XDECREF(s->b_enc); Py_XDECREF(s->b_dec); Py_XDECREF(s->threshold);
    memset(s, 0, sizeof(*s));
}

/* args: (W_enc, b_enc, b_dec | None, threshold | None, architecture, k, apply_b_dec_to_input) */
int cs_py_sae_parse(PyObject *args, cs_py_sae_refs *s)
{
    PyObject *W, *be, *bd, *thr;
    int arch, apply;
    long long k;
    memset(s, 0, sizeof(*s));
    if (!PyTuple_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "sae must be the tuple from corrsteer.core.kernels.sae_args");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOOOiLp", &W, &be, &bd, &thr, &arch, &k, &apply)) return -1;
    if ((s->W_enc = cs_py_as_array(W, NPY_FLOAT32, 2, "W_enc")) == NULL) goto fail;
    if ((s->b_enc = cs_py_as_array(be, NPY_FLOAT32, 1, "b_enc")) == NULL) goto fail;
    const int64_t d_in = DIM(s->W_enc, 0), d_sae = DIM(s->W_enc, 1);
    if (DIM(s->b_enc, 0) != d_sae) {
        PyErr_Format(PyExc_ValueError, "b_enc has %lld entries, W_enc has d_sae=%lld",
                     (long long)DIM(s->b_enc, 0), (long long)d_sae);
        goto fail;
    }
    if (bd != Py_None) {
        if ((s->b_dec = cs_py_as_array(bd, NPY_FLOAT32, 1, "b_dec")) == NULL) goto fail;
        if (DIM(s->b_dec, 0) != d_in) {
            PyErr_Format(PyExc_ValueError, "b_dec has %lld entries, W_enc has d_in=%lld",
                         (long long)DIM(s->b_dec, 0), (long long)d_in);
            goto fail;
        }
    }
    if (thr != Py_None) {
        if ((s->threshold = cs_py_as_array(thr, NPY_FLOAT32, 1, "threshold")) == NULL) goto fail;
        if (DIM(s->threshold, 0) != d_sae) {
            PyErr_Format(PyExc_ValueError, "threshold has %lld entries, W_enc has d_sae=%lld",
                         (long long)DIM(s->threshold, 0), (long long)d_sae);
            goto fail;
        }
    }
    s->view.d_in = d_in;
    s->view.d_sae = d_sae;
    s->view.W_enc = PyArray_DATA(s->W_enc);
    s->view.b_enc = PyArray_DATA(s->b_enc);
    s->view.b_dec = s->b_dec ? PyArray_DATA(s->b_dec) : NULL;
    s->view.threshold = s->threshold ? PyArray_DATA(s->threshold) : NULL;
    s->view.architecture = (cs_arch)arch;
    s->view.k = (int64_t)k;
    s->view.apply_b_dec_to_input = apply;
    cs_status st = cs_sae_check(&s->view);
    if (st != CS_OK) { cs_py_raise_status(st, "SAE"); goto fail; }
    return 0;
fail:
    cs_py_sae_release(s);
    return -1;
}

int cs_py_check_x(PyArrayObject *x, const cs_py_sae_refs *s, const char *name)
{
    if (DIM(x, PyArray_NDIM(x) - 1) != s->view.d_in) {
        PyErr_Format(PyExc_ValueError, "%s has d_in=%lld but the SAE expects %lld", name,
                     (long long)DIM(x, PyArray_NDIM(x) - 1), (long long)s->view.d_in);
        return -1;
    }
    return 0;
}

/* seq as given (no cast yet): an integer array of n values. */
static PyArrayObject *seq_as_given(PyObject *obj, int64_t n)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (a == NULL) return NULL;
    if (!PyArray_ISINTEGER(a)) {
        PyErr_Format(PyExc_TypeError, "seq must be an integer array of sequence indices, got dtype %S",
                     (PyObject *)PyArray_DESCR(a));
    } else if (PyArray_NDIM(a) != 1 || DIM(a, 0) != n) {
        PyErr_Format(PyExc_ValueError, "seq must have one entry per row of x (%lld), got %d-D with "
                     "%lld entries", (long long)n, PyArray_NDIM(a), (long long)PyArray_SIZE(a));
    } else {
        return a;
    }
    Py_DECREF(a);
    return NULL;
}

int cs_py_rows_and_seq(PyObject *x_obj, PyObject *seq_obj, const cs_py_sae_refs *s, int64_t n_seq,
                       PyArrayObject **x, PyArrayObject **seq)
{
    PyArrayObject *given = NULL, *wide = NULL;
    if ((*x = cs_py_as_array(x_obj, NPY_FLOAT32, 2, "x")) == NULL || cs_py_check_x(*x, s, "x") < 0) return -1;
    const int64_t n = DIM(*x, 0);
    if ((given = seq_as_given(seq_obj, n)) == NULL) return -1;
    /* Widen without changing any value (signed -> int64, unsigned -> uint64), check the
     * range there, and only then make the int64 array the core reads. */
    const int is_unsigned = PyArray_ISUNSIGNED(given);
    wide = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)given, is_unsigned ? NPY_UINT64 : NPY_INT64,
                                             NPY_ARRAY_IN_ARRAY);
    if (wide == NULL) goto fail;
    for (int64_t i = 0; i < n; ++i) {
        if (is_unsigned) {
            const unsigned long long v = ((const uint64_t *)PyArray_DATA(wide))[i];
            if (v >= (unsigned long long)n_seq) {
                PyErr_Format(PyExc_ValueError, "seq[%lld] = %llu is outside [-1, %lld): -1 skips a "
                             "row, 0..n_seq-1 names its sequence", (long long)i, v, (long long)n_seq);
                goto fail;
            }
        } else {
            const long long v = ((const int64_t *)PyArray_DATA(wide))[i];
            if (v < -1 || v >= (long long)n_seq) {
                PyErr_Format(PyExc_ValueError, "seq[%lld] = %lld is outside [-1, %lld): -1 skips a "
                             "row, 0..n_seq-1 names its sequence", (long long)i, v, (long long)n_seq);
                goto fail;
            }
        }
    }
    if (is_unsigned) {  /* every value < n_seq <= INT64_MAX: the cast is exact */
        *seq = (PyArrayObject *)PyArray_Cast(wide, NPY_INT64);
        Py_DECREF(wide);
    } else {
        *seq = wide;
    }
    Py_DECREF(given);
    return *seq != NULL ? 0 : -1;
fail:
    Py_XDECREF(given);
    Py_XDECREF(wide);
    return -1;
}
