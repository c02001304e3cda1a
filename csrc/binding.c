/*
 * binding.c -- corrsteer._core: the only file that includes Python.h and numpy.
 *
 * Every function converts its arrays with PyArray_FROM_OTF(..., NPY_ARRAY_IN_ARRAY)
 * (a float32 C-contiguous array passes without a copy), checks every shape against
 * every other, releases the GIL around the C call, and maps a cs_status to an
 * exception in raise_status(). Pooler and Accumulator own their C state and free it
 * in tp_dealloc. An object used from a second thread while a first has released the
 * GIL inside one of its methods is refused: a "busy" flag, tested and set under the
 * GIL, makes the second call raise RuntimeError instead of racing.
 * No defaults or policy here: corrsteer/kernels.py owns the friendly layer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "corrsteer.h"

static PyObject *FormatError = NULL;  /* subclass of CorrsteerError and ValueError */

#ifndef CS_COMPILER
#define CS_COMPILER "unknown"
#endif
#ifndef CS_CFLAGS
#define CS_CFLAGS ""
#endif

static PyObject *raise_status(cs_status st, const char *what)
{
    switch (st) {
    case CS_OK:
        PyErr_Format(PyExc_SystemError, "%s: raise_status called with CS_OK", what);
        break;
    case CS_ERR_NOMEM:
        PyErr_Format(PyExc_MemoryError, "%s: out of memory", what);
        break;
    case CS_ERR_FORMAT_SIZE: case CS_ERR_FORMAT_MAGIC: case CS_ERR_FORMAT_VERSION:
    case CS_ERR_FORMAT_CHECKSUM: case CS_ERR_FORMAT_CORRUPT:
        PyErr_Format(FormatError, "%s: %s", what, cs_status_to_string(st));
        break;
    default:
        PyErr_Format(PyExc_ValueError, "%s: %s", what, cs_status_to_string(st));
        break;
    }
    return NULL;
}

/* Convert obj to an aligned C-contiguous array of type; NULL (exception set) on failure. */
static PyArrayObject *as_array(PyObject *obj, int type, int ndim, const char *name)
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

#define DIM(a, i) ((int64_t)PyArray_DIM((a), (i)))

/* ------------------------------------------------------------------ SAE */

typedef struct {
    PyArrayObject *W_enc, *b_enc, *b_dec, *threshold;
    cs_sae view;
} sae_refs;

static void sae_release(sae_refs *s)
{
    Py_XDECREF(s->W_enc); Py_XDECREF(s->b_enc); Py_XDECREF(s->b_dec); Py_XDECREF(s->threshold);
    memset(s, 0, sizeof(*s));
}

/* args: (W_enc, b_enc, b_dec | None, threshold | None, architecture, k, apply_b_dec_to_input) */
static int sae_parse(PyObject *args, sae_refs *s)
{
    PyObject *W, *be, *bd, *thr;
    int arch, apply;
    long long k;
    memset(s, 0, sizeof(*s));
    if (!PyTuple_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "sae must be the tuple from corrsteer.kernels.sae_args");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOOOiLp", &W, &be, &bd, &thr, &arch, &k, &apply)) return -1;
    if ((s->W_enc = as_array(W, NPY_FLOAT32, 2, "W_enc")) == NULL) goto fail;
    if ((s->b_enc = as_array(be, NPY_FLOAT32, 1, "b_enc")) == NULL) goto fail;
    const int64_t d_in = DIM(s->W_enc, 0), d_sae = DIM(s->W_enc, 1);
    if (DIM(s->b_enc, 0) != d_sae) {
        PyErr_Format(PyExc_ValueError, "b_enc has %lld entries, W_enc has d_sae=%lld",
                     (long long)DIM(s->b_enc, 0), (long long)d_sae);
        goto fail;
    }
    if (bd != Py_None) {
        if ((s->b_dec = as_array(bd, NPY_FLOAT32, 1, "b_dec")) == NULL) goto fail;
        if (DIM(s->b_dec, 0) != d_in) {
            PyErr_Format(PyExc_ValueError, "b_dec has %lld entries, W_enc has d_in=%lld",
                         (long long)DIM(s->b_dec, 0), (long long)d_in);
            goto fail;
        }
    }
    if (thr != Py_None) {
        if ((s->threshold = as_array(thr, NPY_FLOAT32, 1, "threshold")) == NULL) goto fail;
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
    if (st != CS_OK) { raise_status(st, "SAE"); goto fail; }
    return 0;
fail:
    sae_release(s);
    return -1;
}

static int check_x(PyArrayObject *x, const sae_refs *s, const char *name)
{
    if (DIM(x, PyArray_NDIM(x) - 1) != s->view.d_in) {
        PyErr_Format(PyExc_ValueError, "%s has d_in=%lld but the SAE expects %lld", name,
                     (long long)DIM(x, PyArray_NDIM(x) - 1), (long long)s->view.d_in);
        return -1;
    }
    return 0;
}

static PyObject *py_sae_encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sae_obj, *x_obj, *out = NULL;
    PyArrayObject *x = NULL;
    sae_refs s;
    if (!PyArg_ParseTuple(args, "OO", &sae_obj, &x_obj)) return NULL;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = as_array(x_obj, NPY_FLOAT32, 2, "x")) == NULL || check_x(x, &s, "x") < 0) goto fail;
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)s.view.d_sae};
    if ((out = PyArray_SimpleNew(2, dims, NPY_FLOAT32)) == NULL) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_sae_encode(&s.view, PyArray_DATA(x), DIM(x, 0), PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { Py_CLEAR(out); raise_status(st, "sae_encode(x)"); }
fail:
    Py_XDECREF(x);
    sae_release(&s);
    return out;
}

static PyObject *py_sae_encode_pooled(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sae_obj, *x_obj, *mask_obj, *out = NULL;
    PyArrayObject *x = NULL, *mask = NULL;
    int mode;
    sae_refs s;
    if (!PyArg_ParseTuple(args, "OOOi", &sae_obj, &x_obj, &mask_obj, &mode)) return NULL;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = as_array(x_obj, NPY_FLOAT32, 3, "x")) == NULL || check_x(x, &s, "x") < 0) goto fail;
    if (mask_obj != Py_None) {
        if ((mask = as_array(mask_obj, NPY_UINT8, 2, "mask")) == NULL) goto fail;
        if (DIM(mask, 0) != DIM(x, 0) || DIM(mask, 1) != DIM(x, 1)) {
            PyErr_Format(PyExc_ValueError, "mask has shape (%lld, %lld) but x has (n_seq, n_tok) = "
                         "(%lld, %lld)", (long long)DIM(mask, 0), (long long)DIM(mask, 1),
                         (long long)DIM(x, 0), (long long)DIM(x, 1));
            goto fail;
        }
    }
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)s.view.d_sae};
    if ((out = PyArray_SimpleNew(2, dims, NPY_FLOAT32)) == NULL) goto fail;
    cs_status st;
    const uint8_t *m = mask ? PyArray_DATA(mask) : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = cs_sae_encode_pooled(&s.view, PyArray_DATA(x), m, DIM(x, 0), DIM(x, 1),
                              (cs_pool_mode)mode, PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { Py_CLEAR(out); raise_status(st, "sae_encode_pooled(x, mask)"); }
fail:
    Py_XDECREF(x);
    Py_XDECREF(mask);
    sae_release(&s);
    return out;
}

static PyObject *py_sae_pool_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sae_obj, *x_obj, *seq_obj, *z = NULL, *counts = NULL, *result = NULL;
    PyArrayObject *x = NULL, *seq = NULL;
    long long n_seq;
    int mode;
    double *sum = NULL;
    sae_refs s;
    if (!PyArg_ParseTuple(args, "OOOLi", &sae_obj, &x_obj, &seq_obj, &n_seq, &mode)) return NULL;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = as_array(x_obj, NPY_FLOAT32, 2, "x")) == NULL || check_x(x, &s, "x") < 0) goto fail;
    if ((seq = as_array(seq_obj, NPY_INT64, 1, "seq")) == NULL) goto fail;
    if (DIM(seq, 0) != DIM(x, 0)) {
        PyErr_Format(PyExc_ValueError, "seq has %lld entries but x has %lld rows",
                     (long long)DIM(seq, 0), (long long)DIM(x, 0));
        goto fail;
    }
    if (n_seq < 1) { PyErr_SetString(PyExc_ValueError, "n_seq must be >= 1"); goto fail; }
    npy_intp dims[2] = {(npy_intp)n_seq, (npy_intp)s.view.d_sae}, cdim[1] = {(npy_intp)n_seq};
    if ((z = PyArray_ZEROS(2, dims, NPY_FLOAT32, 0)) == NULL) goto fail;
    if ((counts = PyArray_ZEROS(1, cdim, NPY_INT64, 0)) == NULL) goto fail;
    if (mode == CS_POOL_MEAN) {
        sum = PyMem_Calloc((size_t)dims[0] * (size_t)dims[1], sizeof(double));
        if (sum == NULL) { PyErr_NoMemory(); goto fail; }
    }
    cs_status st;
    float *zp = PyArray_DATA((PyArrayObject *)z);
    int64_t *cp = PyArray_DATA((PyArrayObject *)counts);
    Py_BEGIN_ALLOW_THREADS
    st = cs_sae_pool_rows(&s.view, PyArray_DATA(x), PyArray_DATA(seq), DIM(x, 0), n_seq,
                          (cs_pool_mode)mode, mode == CS_POOL_MAX ? zp : NULL, sum, cp);
    if (st == CS_OK && sum != NULL)
        for (int64_t i = 0; i < (int64_t)n_seq; ++i)
            for (int64_t j = 0; j < s.view.d_sae; ++j)
                zp[i * s.view.d_sae + j] = cp[i] ? (float)(sum[i * s.view.d_sae + j] / (double)cp[i]) : 0.0f;
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { raise_status(st, "sae_pool_rows(x, seq)"); goto fail; }
    result = PyTuple_Pack(2, z, counts);
fail:
    PyMem_Free(sum);
    Py_XDECREF(z);
    Py_XDECREF(counts);
    Py_XDECREF(x);
    Py_XDECREF(seq);
    sae_release(&s);
    return result;
}

/* ------------------------------------------------------------- steering */

static PyObject *py_steering_vector(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *W_obj, *f_obj, *c_obj, *out = NULL;
    PyArrayObject *W = NULL, *f = NULL, *c = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &W_obj, &f_obj, &c_obj)) return NULL;
    if ((W = as_array(W_obj, NPY_FLOAT32, 2, "W_dec")) == NULL) goto fail;
    if ((f = as_array(f_obj, NPY_INT64, 1, "features")) == NULL) goto fail;
    if ((c = as_array(c_obj, NPY_FLOAT64, 1, "coefficients")) == NULL) goto fail;
    if (DIM(f, 0) != DIM(c, 0)) {
        PyErr_Format(PyExc_ValueError, "features has %lld entries but coefficients has %lld",
                     (long long)DIM(f, 0), (long long)DIM(c, 0));
        goto fail;
    }
    npy_intp dims[1] = {PyArray_DIM(W, 1)};
    if ((out = PyArray_SimpleNew(1, dims, NPY_FLOAT32)) == NULL) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_steer_vector(PyArray_DATA(W), DIM(W, 0), DIM(W, 1), PyArray_DATA(f), PyArray_DATA(c),
                         DIM(f, 0), PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { Py_CLEAR(out); raise_status(st, "steering_vector(W_dec, features, coefficients)"); }
fail:
    Py_XDECREF(W); Py_XDECREF(f); Py_XDECREF(c);
    return out;
}

static PyObject *py_add_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *v_obj, *mask_obj, *ret = NULL;
    PyArrayObject *v = NULL, *mask = NULL, *x;
    if (!PyArg_ParseTuple(args, "O!OO", &PyArray_Type, &x_obj, &v_obj, &mask_obj)) return NULL;
    x = (PyArrayObject *)x_obj;
    if (PyArray_TYPE(x) != NPY_FLOAT32 || PyArray_NDIM(x) != 2 || !PyArray_IS_C_CONTIGUOUS(x)
        || !PyArray_ISWRITEABLE(x) || !PyArray_ISALIGNED(x)) {
        PyErr_SetString(PyExc_TypeError, "x must be a writable, aligned 2-D float32 C-contiguous array");
        return NULL;
    }
    if ((v = as_array(v_obj, NPY_FLOAT32, 1, "v")) == NULL) goto fail;
    if (DIM(v, 0) != DIM(x, 1)) {
        PyErr_Format(PyExc_ValueError, "v has d_in=%lld but x has d_in=%lld",
                     (long long)DIM(v, 0), (long long)DIM(x, 1));
        goto fail;
    }
    if (mask_obj != Py_None) {
        if ((mask = as_array(mask_obj, NPY_UINT8, 1, "mask")) == NULL) goto fail;
        if (DIM(mask, 0) != DIM(x, 0)) {
            PyErr_Format(PyExc_ValueError, "mask has %lld entries but x has %lld rows",
                         (long long)DIM(mask, 0), (long long)DIM(x, 0));
            goto fail;
        }
    }
    cs_status st;
    const uint8_t *m = mask ? PyArray_DATA(mask) : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = cs_steer_add_rows(PyArray_DATA(x), DIM(x, 0), DIM(x, 1), PyArray_DATA(v), m);
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { raise_status(st, "add_rows(x, v, mask)"); goto fail; }
    ret = Py_NewRef(Py_None);
fail:
    Py_XDECREF(v); Py_XDECREF(mask);
    return ret;
}

/* ------------------------------------------------------------ build info */

static PyObject *py_build_info(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("{s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:L}", "blas", cs_blas_name(),
                         "version", cs_blas_config(), "threads", cs_blas_get_num_threads(),
                         "compiler", CS_COMPILER, "flags", CS_CFLAGS,
                         "core_version", CS_VERSION_STRING,
                         "small_rows_isa", cs_blas_small_rows_isa(),
                         "small_rows_max", (long long)cs_blas_small_rows_max());
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyLong_FromLong(cs_blas_get_num_threads());
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 4096) {
        PyErr_SetString(PyExc_ValueError, "thread count must be in [1, 4096]");
        return NULL;
    }
    cs_blas_set_num_threads((int)n);
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------ busy flags */

/* Called with the GIL held, so test-and-set cannot interleave between threads. */
static int claim(int *busy, const char *what)
{
    if (*busy) {
        PyErr_Format(PyExc_RuntimeError, "this %s is being used from another thread; give each "
                     "thread its own %s or guard it with a lock", what, what);
        return -1;
    }
    *busy = 1;
    return 0;
}

/* ---------------------------------------------------------------- Pooler */

typedef struct {
    PyObject_HEAD
    cs_pooler *p;
    int busy;
} PoolerObject;

static void Pooler_dealloc(PoolerObject *self)
{
    cs_pooler_free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Pooler_init(PoolerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sae", "n_seq", "mode", "buffer_rows", NULL};
    PyObject *sae_obj;
    long long n_seq, buffer_rows;
    int mode;
    sae_refs s;
    if (self->p != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pooler is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLiL", kwlist, &sae_obj, &n_seq, &mode, &buffer_rows))
        return -1;
    if (sae_parse(sae_obj, &s) < 0) return -1;
    cs_status st = cs_pooler_init(&self->p, &s.view, n_seq, (cs_pool_mode)mode, buffer_rows);
    sae_release(&s);
    if (st != CS_OK) { raise_status(st, "Pooler"); return -1; }
    return 0;
}

static int pooler_ready(PoolerObject *self)
{
    if (self->p == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pooler is not initialised");
        return -1;
    }
    return claim(&self->busy, "Pooler");
}

static PyObject *Pooler_push(PoolerObject *self, PyObject *args)
{
    PyObject *sae_obj, *x_obj, *seq_obj, *ret = NULL;
    PyArrayObject *x = NULL, *seq = NULL;
    sae_refs s;
    if (!PyArg_ParseTuple(args, "OOO", &sae_obj, &x_obj, &seq_obj)) return NULL;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = as_array(x_obj, NPY_FLOAT32, 2, "x")) == NULL || check_x(x, &s, "x") < 0) goto fail;
    if ((seq = as_array(seq_obj, NPY_INT64, 1, "seq")) == NULL) goto fail;
    if (DIM(seq, 0) != DIM(x, 0)) {
        PyErr_Format(PyExc_ValueError, "seq has %lld entries but x has %lld rows",
                     (long long)DIM(seq, 0), (long long)DIM(x, 0));
        goto fail;
    }
    if (pooler_ready(self) < 0) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_pooler_push(self->p, &s.view, PyArray_DATA(x), PyArray_DATA(seq), DIM(x, 0));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { raise_status(st, "Pooler.push(x, seq)"); goto fail; }
    ret = Py_NewRef(Py_None);
fail:
    Py_XDECREF(x); Py_XDECREF(seq);
    sae_release(&s);
    return ret;
}

static PyObject *Pooler_flush(PoolerObject *self, PyObject *sae_obj)
{
    sae_refs s;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if (pooler_ready(self) < 0) { sae_release(&s); return NULL; }
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_pooler_flush(self->p, &s.view);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    sae_release(&s);
    if (st != CS_OK) return raise_status(st, "Pooler.flush");
    Py_RETURN_NONE;
}

static PyObject *Pooler_result(PoolerObject *self, PyObject *sae_obj)
{
    PyObject *z = NULL, *counts = NULL, *ret = NULL;
    sae_refs s;
    if (sae_parse(sae_obj, &s) < 0) return NULL;
    if (self->p == NULL) { pooler_ready(self); goto fail; }
    npy_intp dims[2] = {(npy_intp)cs_pooler_n_seq(self->p), (npy_intp)s.view.d_sae};
    if ((z = PyArray_SimpleNew(2, dims, NPY_FLOAT32)) == NULL) goto fail;
    if ((counts = PyArray_SimpleNew(1, dims, NPY_INT64)) == NULL) goto fail;
    if (pooler_ready(self) < 0) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_pooler_result(self->p, &s.view, PyArray_DATA((PyArrayObject *)z),
                          PyArray_DATA((PyArrayObject *)counts));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { raise_status(st, "Pooler.result"); goto fail; }
    ret = PyTuple_Pack(2, z, counts);
fail:
    Py_XDECREF(z); Py_XDECREF(counts);
    sae_release(&s);
    return ret;
}

static PyObject *Pooler_reset(PoolerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (pooler_ready(self) < 0) return NULL;
    cs_pooler_reset(self->p);
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *Pooler_get_n_seq(PoolerObject *self, void *c) { (void)c; return PyLong_FromLongLong(cs_pooler_n_seq(self->p)); }
static PyObject *Pooler_get_buffered(PoolerObject *self, void *c) { (void)c; return PyLong_FromLongLong(cs_pooler_buffered(self->p)); }
static PyObject *Pooler_get_nbytes(PoolerObject *self, void *c) { (void)c; return PyLong_FromLongLong(cs_pooler_nbytes(self->p)); }

static PyMethodDef Pooler_methods[] = {
    {"push", (PyCFunction)Pooler_push, METH_VARARGS, "push(sae, x (n_rows, d_in), seq (n_rows,) int64)"},
    {"flush", (PyCFunction)Pooler_flush, METH_O, "flush(sae)"},
    {"result", (PyCFunction)Pooler_result, METH_O, "result(sae) -> (z (n_seq, d_sae), counts (n_seq,))"},
    {"reset", (PyCFunction)Pooler_reset, METH_NOARGS, "zero the state and drop buffered rows"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Pooler_getset[] = {
    {"n_seq", (getter)Pooler_get_n_seq, NULL, "number of sequences", NULL},
    {"buffered", (getter)Pooler_get_buffered, NULL, "rows waiting for the next flush", NULL},
    {"nbytes", (getter)Pooler_get_nbytes, NULL, "bytes owned by the C state", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject PoolerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corrsteer._core.Pooler",
    .tp_basicsize = sizeof(PoolerObject),
    .tp_dealloc = (destructor)Pooler_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pooler(sae, n_seq, mode, buffer_rows): streaming fused encode + pool state.",
    .tp_methods = Pooler_methods,
    .tp_getset = Pooler_getset,
    .tp_init = (initproc)Pooler_init,
    .tp_new = PyType_GenericNew,
};

/* ----------------------------------------------------------- Accumulator */

typedef struct {
    PyObject_HEAD
    cs_corr *c;
    int busy;
} AccObject;

static PyTypeObject AccumulatorType;

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
    if (st != CS_OK) { raise_status(st, "Accumulator"); return -1; }
    return 0;
}

static int acc_ready(AccObject *self)
{
    if (self->c == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Accumulator is not initialised");
        return -1;
    }
    return claim(&self->busy, "accumulator");
}

static PyObject *Acc_update(AccObject *self, PyObject *args)
{
    PyObject *z_obj, *y_obj, *ret = NULL;
    PyArrayObject *z = NULL, *y = NULL;
    if (!PyArg_ParseTuple(args, "OO", &z_obj, &y_obj)) return NULL;
    if (self->c == NULL) return acc_ready(self), NULL;
    if ((z = as_array(z_obj, NPY_FLOAT32, 2, "z")) == NULL) goto fail;
    if ((y = as_array(y_obj, NPY_FLOAT64, 1, "y")) == NULL) goto fail;
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
    if (st != CS_OK) { raise_status(st, "update(z, y)"); goto fail; }
    ret = Py_NewRef(Py_None);
fail:
    Py_XDECREF(z); Py_XDECREF(y);
    return ret;
}

static PyObject *Acc_merge(AccObject *self, PyObject *other_obj)
{
    if (!PyObject_TypeCheck(other_obj, &AccumulatorType)) {
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
    if (st != CS_OK) return raise_status(st, "merge");
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
    if (st != CS_OK) { Py_DECREF(out); return raise_status(st, "accumulator result"); }
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
    if (st != CS_OK) { raise_status(st, "top"); goto fail; }
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

static PyObject *Acc_to_bytes(AccObject *self, PyObject *noargs)
{
    (void)noargs;
    if (self->c == NULL) return acc_ready(self), NULL;
    const int64_t size = cs_corr_serialized_size(self->c);
    if (size < 0 || size > PY_SSIZE_T_MAX) return raise_status(CS_ERR_OVERFLOW, "to_bytes");
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (b == NULL) return NULL;
    if (acc_ready(self) < 0) { Py_DECREF(b); return NULL; }
    cs_status st;
    uint8_t *buf = (uint8_t *)PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_serialize(self->c, buf, size);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { Py_DECREF(b); return raise_status(st, "to_bytes"); }
    return b;
}

static PyObject *Acc_from_bytes(PyObject *cls, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    cs_corr *c = NULL;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_corr_deserialize(&c, view.buf, (int64_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (st != CS_OK) return raise_status(st, "from_bytes");
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

static PyTypeObject AccumulatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corrsteer._core.Accumulator",
    .tp_basicsize = sizeof(AccObject),
    .tp_dealloc = (destructor)Acc_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Accumulator(d_sae, kind=0): streaming point-biserial / Pearson state.",
    .tp_methods = Acc_methods,
    .tp_getset = Acc_getset,
    .tp_init = (initproc)Acc_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"sae_encode", py_sae_encode, METH_VARARGS, "sae_encode(sae, x (n_rows, d_in)) -> (n_rows, d_sae)"},
    {"sae_encode_pooled", py_sae_encode_pooled, METH_VARARGS,
     "sae_encode_pooled(sae, x (n_seq, n_tok, d_in), mask (n_seq, n_tok) uint8 | None, mode) -> (n_seq, d_sae)"},
    {"sae_pool_rows", py_sae_pool_rows, METH_VARARGS,
     "sae_pool_rows(sae, x (n_rows, d_in), seq (n_rows,) int64, n_seq, mode) -> (z, counts)"},
    {"steering_vector", py_steering_vector, METH_VARARGS,
     "steering_vector(W_dec (d_sae, d_in), features (n_feat,) int64, coefficients (n_feat,) float64) -> (d_in,)"},
    {"add_rows", py_add_rows, METH_VARARGS, "add_rows(x (n_rows, d_in), v (d_in,), mask (n_rows,) uint8 | None)"},
    {"build_info", py_build_info, METH_NOARGS, "build_info() -> dict"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "BLAS threads"},
    {"set_num_threads", py_set_num_threads, METH_O, "set BLAS threads"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "corrsteer._core", "corrsteer's C core (use corrsteer.kernels).", -1,
    module_methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    PyObject *m = NULL, *errors = NULL, *base = NULL, *bases = NULL;
    if (PyType_Ready(&PoolerType) < 0 || PyType_Ready(&AccumulatorType) < 0) return NULL;
    if ((errors = PyImport_ImportModule("corrsteer.errors")) == NULL) goto fail;
    if ((base = PyObject_GetAttrString(errors, "CorrsteerError")) == NULL) goto fail;
    if ((bases = PyTuple_Pack(2, base, PyExc_ValueError)) == NULL) goto fail;
    if ((FormatError = PyErr_NewExceptionWithDoc("corrsteer._core.FormatError",
            "Serialised accumulator bytes are malformed (truncated, wrong magic/version, "
            "bad checksum or inconsistent content).", bases, NULL)) == NULL) goto fail;
    if ((m = PyModule_Create(&module_def)) == NULL) goto fail;
    if (PyModule_AddObjectRef(m, "FormatError", FormatError) < 0) goto fail;
    if (PyModule_AddObjectRef(m, "Pooler", (PyObject *)&PoolerType) < 0) goto fail;
    if (PyModule_AddObjectRef(m, "Accumulator", (PyObject *)&AccumulatorType) < 0) goto fail;
    Py_DECREF(errors); Py_DECREF(base); Py_DECREF(bases);
    return m;
fail:
    Py_XDECREF(m); Py_XDECREF(errors); Py_XDECREF(base); Py_XDECREF(bases);
    return NULL;
}
