/*
 * py_pooler.c -- corrsteer.core._core.Pooler: the streaming fused SAE encode + pool state
 * (cs_pooler). It owns its C state and frees it in tp_dealloc; its methods take the
 * SAE tuple on every call, release the GIL around the C call, and refuse a second
 * thread through the busy flag (cs_py_claim in py_args.c).
 */
#include "binding.h"

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
    cs_py_sae_refs s;
    if (self->p != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pooler is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLiL", kwlist, &sae_obj, &n_seq, &mode, &buffer_rows))
        return -1;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return -1;
    cs_status st = cs_pooler_init(&self->p, &s.view, n_seq, (cs_pool_mode)mode, buffer_rows);
    cs_py_sae_release(&s);
    if (st != CS_OK) { cs_py_raise_status(st, "Pooler"); return -1; }
    return 0;
}

static int pooler_ready(PoolerObject *self)
{
    return cs_py_claim(self->p, &self->busy, "Pooler");
}

static PyObject *Pooler_push(PoolerObject *self, PyObject *args)
{
    PyObject *sae_obj, *x_obj, *seq_obj, *ret = NULL;
    PyArrayObject *x = NULL, *seq = NULL;
    cs_py_sae_refs s;
    if (!PyArg_ParseTuple(args, "OOO", &sae_obj, &x_obj, &seq_obj)) return NULL;
    if (self->p == NULL) return pooler_ready(self), NULL;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
    if (cs_py_rows_and_seq(x_obj, seq_obj, &s, cs_pooler_n_seq(self->p), &x, &seq) < 0) goto fail;
    if (pooler_ready(self) < 0) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_pooler_push(self->p, &s.view, PyArray_DATA(x), PyArray_DATA(seq), DIM(x, 0));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CS_OK) { cs_py_raise_status(st, "Pooler.push(x, seq)"); goto fail; }
    ret = Py_NewRef(Py_None);
fail:
    Py_XDECREF(x); Py_XDECREF(seq);
    cs_py_sae_release(&s);
    return ret;
}

static PyObject *Pooler_flush(PoolerObject *self, PyObject *sae_obj)
{
    cs_py_sae_refs s;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
    if (pooler_ready(self) < 0) { cs_py_sae_release(&s); return NULL; }
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_pooler_flush(self->p, &s.view);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    cs_py_sae_release(&s);
    if (st != CS_OK) return cs_py_raise_status(st, "Pooler.flush");
    Py_RETURN_NONE;
}

static PyObject *Pooler_result(PoolerObject *self, PyObject *sae_obj)
{
    PyObject *z = NULL, *counts = NULL, *ret = NULL;
    cs_py_sae_refs s;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
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
    if (st != CS_OK) { cs_py_raise_status(st, "Pooler.result"); goto fail; }
    ret = PyTuple_Pack(2, z, counts);
fail:
    Py_XDECREF(z); Py_XDECREF(counts);
    cs_py_sae_release(&s);
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

PyTypeObject cs_py_PoolerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corrsteer.core._core.Pooler",
    .tp_basicsize = sizeof(PoolerObject),
    .tp_dealloc = (destructor)Pooler_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pooler(sae, n_seq, mode, buffer_rows): streaming fused encode + pool state.",
    .tp_methods = Pooler_methods,
    .tp_getset = Pooler_getset,
    .tp_init = (initproc)Pooler_init,
    .tp_new = PyType_GenericNew,
};
