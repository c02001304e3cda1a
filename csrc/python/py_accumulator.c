/*
 * py_accumulator.c -- corrsteer.core._core.Accumulator: the streaming point-biserial /
 * Pearson state (cs_corr) and its versioned, checksummed byte form. It owns its C
 * state and frees it in tp_dealloc; its methods release the GIL around the C call and
 * refuse a second thread through the busy flag (cs_py_claim in py_args.c).
 */
#include "binding.h"

typedef struct {
    PyObject_HEAD
    cs_corr *c;
    int busy;
} AccObject;

static void Acc_dealloc(AccObject *self)
{
    cs_corr_free(self->c);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Acc_init(AccObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"d_sae", "kind", NULL};
    long long d_sae;
    int kind = 0;
    if (self->c != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Accumulator is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|i", kwlist, &d_sae, &kind)) return -1;
    cs_status st = cs_corr_init(&self->c, d_sae, (cs_corr_kind)kind);
    if (st != CS_OK) { cs_py_raise_status(st, "Accumulator"); return -1; }
    return 0;
}

static int acc_ready(AccObject *self)
{
    return cs_py_claim(self->c, &self->busy, "Accumulator");
}

static PyObject *Acc_update(AccObject *self, PyObject *args)
{
    PyObject *z_obj, *y_obj, *ret = NULL;
    PyArrayObject *z = NULL, *y = NULL;
    if (!PyArg_ParseTuple(args, "OO", &z_obj, &y_obj)) return NULL;
    if (self->c == NULL) return acc_ready(self), NULL;
    if ((z = cs_py_as_array(z_obj, NPY_FLOAT32, 2, "z")) == NULL) goto fail;
    if ((y = cs_py_as_array(y_obj, NPY_FLOAT64, 1, "y")) == NULL) goto fail;
    if (DIM(z, 1) != cs_corr_d_sae(self->c) || DIM(y, 0) != DIM(z, 0)) {
        PyErr_Format(PyExc_ValueError, "z has shape (%lld, %lld) and y has %lld entries; expected "
                     "(n, %lld) and n", (long long)DIM(z, 0), (long long)DIM(z, 1),
                     (long long)DIM(y, 0), (long long)cs_corr_d_sae(self->c));
        goto fail;
    }
    if (acc_ready(self) < 0) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_update(self->c, PyArray_DATA(z), PyArray_DATA(y), DIM(z, 0));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { cs_py_raise_status(st, "update(z, y)"); goto fail; }
    ret = Py_NewRef(Py_None);
fail:
    Py_XDECREF(z); Py_XDECREF(y);
    return ret;
}

static PyObject *Acc_merge(AccObject *self, PyObject *other_obj)
{
    if (!PyObject_TypeCheck(other_obj, &cs_py_AccumulatorType)) {
        PyErr_SetString(PyExc_TypeError, "merge needs another Accumulator");
        return NULL;
    }
    AccObject *other = (AccObject *)other_obj;
    if (other->c == NULL) return acc_ready(other), NULL;
    if (acc_ready(self) < 0) return NULL;
    if (other != self && acc_ready(other) < 0) { self->busy = 0; return NULL; }
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_merge(self->c, other->c);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    other->busy = 0;
    if (st != CS_OK) return cs_py_raise_status(st, "merge");
    Py_RETURN_NONE;
}

static PyObject *Acc_reset(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    if (acc_ready(self) < 0) return NULL;
    cs_corr_reset(self->c);
    self->busy = 0;
    Py_RETURN_NONE;
}

/* Run one per-feature result function into a new (d_sae,) float64 array. */
enum { RES_CORR, RES_COEF, RES_COEF_ACTIVE, RES_FREQ };

static PyObject *acc_result(AccObject *self, int which, int *degenerate)
{
    if (self->c == NULL) return acc_ready(self), NULL;
    npy_intp dims[1] = {(npy_intp)cs_corr_d_sae(self->c)};
    PyObject *out = PyArray_SimpleNew(1, dims, NPY_FLOAT64);
    if (out == NULL) return NULL;
    if (acc_ready(self) < 0) { Py_DECREF(out); return NULL; }
    double *p = PyArray_DATA((PyArrayObject *)out);
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    if (which == RES_CORR) st = cs_corr_correlation(self->c, p, degenerate);
    else if (which == RES_FREQ) st = cs_corr_frequency(self->c, p);
    else st = cs_corr_coefficient(self->c, which == RES_COEF_ACTIVE, p);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { Py_DECREF(out); return cs_py_raise_status(st, "accumulator result"); }
    return out;
}

static PyObject *Acc_correlation(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    int degenerate = 0;
    PyObject *r = acc_result(self, RES_CORR, &degenerate);
    if (r == NULL) return NULL;
    PyObject *ret = Py_BuildValue("(NO)", r, degenerate ? Py_True : Py_False);
    return ret;
}

static PyObject *Acc_coefficient(AccObject *self, PyObject *args)
{
    int active_only = 0;
    if (!PyArg_ParseTuple(args, "|p", &active_only)) return NULL;
    return acc_result(self, active_only ? RES_COEF_ACTIVE : RES_COEF, NULL);
}

static PyObject *Acc_frequency(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    return acc_result(self, RES_FREQ, NULL);
}

static PyObject *Acc_top(AccObject *self, PyObject *args)
{
    long long k;
    int sign;
    PyObject *idx = NULL, *r = NULL, *ret = NULL;
    int64_t *ibuf = NULL;
    double *rbuf = NULL;
    if (!PyArg_ParseTuple(args, "Li", &k, &sign)) return NULL;
    if (self->c == NULL) return acc_ready(self), NULL;
    if (k < 1) { PyErr_SetString(PyExc_ValueError, "k must be >= 1"); return NULL; }
    const int64_t d = cs_corr_d_sae(self->c), cap = k < d ? (int64_t)k : d;
    ibuf = PyMem_Malloc((size_t)cap * sizeof(int64_t));
    rbuf = PyMem_Malloc((size_t)cap * sizeof(double));
    if (ibuf == NULL || rbuf == NULL) { PyErr_NoMemory(); goto fail; }
    if (acc_ready(self) < 0) goto fail;
    int64_t n_out = 0;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_top(self->c, cap, (cs_sign)sign, ibuf, rbuf, &n_out);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { cs_py_raise_status(st, "top"); goto fail; }
    npy_intp dims[1] = {(npy_intp)n_out};
    if ((idx = PyArray_SimpleNew(1, dims, NPY_INT64)) == NULL) goto fail;
    if ((r = PyArray_SimpleNew(1, dims, NPY_FLOAT64)) == NULL) goto fail;
    if (n_out > 0) {
        memcpy(PyArray_DATA((PyArrayObject *)idx), ibuf, (size_t)n_out * sizeof(int64_t));
        memcpy(PyArray_DATA((PyArrayObject *)r), rbuf, (size_t)n_out * sizeof(double));
    }
    ret = PyTuple_Pack(2, idx, r);
fail:
    PyMem_Free(ibuf); PyMem_Free(rbuf);
    Py_XDECREF(idx); Py_XDECREF(r);
    return ret;
}

/* The raw state as a dict: four float scalars and six (d_sae,) float64 arrays. */
static PyObject *Acc_moments(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    static const char *const names[] = {"mean", "m2", "mean_pos", "n_active", "n_pos_active", "c_zy"};
    enum { N_ARR = sizeof(names) / sizeof(names[0]) };
    PyObject *arr[N_ARR] = {NULL}, *ret = NULL;
    if (self->c == NULL) return acc_ready(self), NULL;
    npy_intp dims[1] = {(npy_intp)cs_corr_d_sae(self->c)};
    for (int a = 0; a < N_ARR; ++a)
        if ((arr[a] = PyArray_SimpleNew(1, dims, NPY_FLOAT64)) == NULL) goto fail;
    cs_corr_state state = {0};
    state.mean = PyArray_DATA((PyArrayObject *)arr[0]);
    state.m2 = PyArray_DATA((PyArrayObject *)arr[1]);
    state.mean_pos = PyArray_DATA((PyArrayObject *)arr[2]);
    state.n_active = PyArray_DATA((PyArrayObject *)arr[3]);
    state.n_pos_active = PyArray_DATA((PyArrayObject *)arr[4]);
    state.c_zy = PyArray_DATA((PyArrayObject *)arr[5]);
    if (acc_ready(self) < 0) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_moments(self->c, &state);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { cs_py_raise_status(st, "moments"); goto fail; }
    ret = Py_BuildValue("{s:d,s:d,s:d,s:d,s:O,s:O,s:O,s:O,s:O,s:O}", "n", state.n,
                        "n_pos", state.n_pos, "mean_y", state.mean_y, "m2_y", state.m2_y,
                        names[0], arr[0], names[1], arr[1], names[2], arr[2], names[3], arr[3],
                        names[4], arr[4], names[5], arr[5]);
fail:
    for (int a = 0; a < N_ARR; ++a) Py_XDECREF(arr[a]);
    return ret;
}

static PyObject *Acc_to_bytes(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    if (self->c == NULL) return acc_ready(self), NULL;
    const int64_t size = cs_corr_serialized_size(self->c);
    if (size < 0 || size > PY_SSIZE_T_MAX) return cs_py_raise_status(CS_ERR_OVERFLOW, "to_bytes");
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (b == NULL) return NULL;
    if (acc_ready(self) < 0) { Py_DECREF(b); return NULL; }
    cs_status st;
    char reason[256] = "";
    uint8_t *buf = (uint8_t *)PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_serialize(self->c, buf, size);
    if (st == CS_ERR_STATE) cs_corr_check(self->c, reason, sizeof(reason));  /* say why */
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { Py_DECREF(b); return cs_py_raise_detail(st, "to_bytes", reason); }
    return b;
}

static PyObject *Acc_from_bytes(PyObject *cls, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    cs_corr *c = NULL;
    cs_status st;
    char reason[256] = "";
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_deserialize_reason(&c, view.buf, (int64_t)view.len, reason, sizeof(reason));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (st != CS_OK) return cs_py_raise_detail(st, "from_bytes", reason);
    AccObject *self = (AccObject *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (self == NULL) { cs_corr_free(c); return NULL; }
    self->c = c;
    return (PyObject *)self;
}

static PyObject *Acc_get_n(AccObject *self, void *c) { (void)c; return PyFloat_FromDouble(cs_corr_n(self->c)); }
static PyObject *Acc_get_n_pos(AccObject *self, void *c) { (void)c; return PyFloat_FromDouble(cs_corr_n_pos(self->c)); }
static PyObject *Acc_get_d_sae(AccObject *self, void *c) { (void)c; return PyLong_FromLongLong(cs_corr_d_sae(self->c)); }
static PyObject *Acc_get_kind(AccObject *self, void *c) { (void)c; return PyLong_FromLong((long)cs_corr_get_kind(self->c)); }
static PyObject *Acc_get_nbytes(AccObject *self, void *c) { (void)c; return PyLong_FromLongLong(cs_corr_nbytes(self->c)); }

static PyMethodDef Acc_methods[] = {
    {"update", (PyCFunction)Acc_update, METH_VARARGS, "update(z (n, d_sae) float32, y (n,) float64)"},
    {"merge", (PyCFunction)Acc_merge, METH_O, "merge(other): self += other"},
    {"reset", (PyCFunction)Acc_reset, METH_NOARGS, "forget every sample"},
    {"correlation", (PyCFunction)Acc_correlation, METH_NOARGS, "correlation() -> (r (d_sae,), degenerate)"},
    {"coefficient", (PyCFunction)Acc_coefficient, METH_VARARGS, "coefficient(active_only=False) -> (d_sae,)"},
    {"frequency", (PyCFunction)Acc_frequency, METH_NOARGS, "frequency() -> (d_sae,)"},
    {"top", (PyCFunction)Acc_top, METH_VARARGS, "top(k, sign) -> (index (m,), r (m,)), m <= k"},
    {"moments", (PyCFunction)Acc_moments, METH_NOARGS,
     "moments() -> {n, n_pos, mean_y, m2_y: float; mean, m2, mean_pos, n_active, n_pos_active, "
     "c_zy: (d_sae,) float64}, a copy of the raw state"},
    {"to_bytes", (PyCFunction)Acc_to_bytes, METH_NOARGS, "versioned, checksummed bytes"},
    {"from_bytes", (PyCFunction)Acc_from_bytes, METH_O | METH_CLASS, "from_bytes(b) -> Accumulator"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Acc_getset[] = {
    {"n", (getter)Acc_get_n, NULL, "samples folded in", NULL},
    {"n_pos", (getter)Acc_get_n_pos, NULL, "sum of rewards", NULL},
    {"d_sae", (getter)Acc_get_d_sae, NULL, "number of features", NULL},
    {"kind", (getter)Acc_get_kind, NULL, "0 binary, 1 pearson", NULL},
    {"nbytes", (getter)Acc_get_nbytes, NULL, "bytes of C state", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyTypeObject cs_py_AccumulatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corrsteer.core._core.Accumulator",
    .tp_basicsize = sizeof(AccObject),
    .tp_dealloc = (destructor)Acc_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Accumulator(d_sae, kind=0): streaming point-biserial / Pearson state.",
    .tp_methods = Acc_methods,
    .tp_getset = Acc_getset,
    .tp_init = (initproc)Acc_init,
    .tp_new = PyType_GenericNew,
};
