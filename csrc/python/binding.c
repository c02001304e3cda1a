/*
 * binding.c -- corrsteer.core._core: module init, the status-to-exception map, and the
 * plain functions (SAE encode/pool, steering, build info). Argument conversion
 * shared by the binding files is in py_args.c, the Pooler type in py_pooler.c, the
 * Accumulator type in py_accumulator.c; csrc/python/ alone includes Python.h and
 * numpy.
 *
 * Every function converts its arrays with PyArray_FROM_OTF(..., NPY_ARRAY_IN_ARRAY)
 * (a float32 C-contiguous array passes without a copy), checks every shape against
 * every other, releases the GIL around the C call, and maps a cs_status to an
 * exception in cs_py_raise_status(). Pooler and Accumulator own their C state and free
 * it in tp_dealloc. An object used from a second thread while a first has released the
 * GIL inside one of its methods is refused: a "busy" flag, tested and set under the
 * GIL by cs_py_claim(), makes the second call raise RuntimeError instead of racing.
 * No defaults or policy here: corrsteer/kernels.py owns the friendly layer.
 */
#define CS_PY_IMPORT_ARRAY  /* this file alone defines NumPy's API table and imports it */
#include "binding.h"

static PyObject *FormatError = NULL;     /* subclass of CorrsteerError and ValueError */
static PyObject *CorrsteerError = NULL;  /* corrsteer.errors.CorrsteerError: the core's own failures */

#ifndef CS_COMPILER
#define CS_COMPILER "unknown"
#endif
#ifndef CS_CFLAGS
#define CS_CFLAGS ""
#endif

PyObject *cs_py_raise_status(cs_status st, const char *what)
{
    return cs_py_raise_detail(st, what, NULL);
}

PyObject *cs_py_raise_detail(cs_status st, const char *what, const char *detail)
{
    const char *sep = detail != NULL && detail[0] != '\0' ? ": " : "";
    if (*sep == '\0') detail = "";
    switch (st) {
    case CS_OK:
        PyErr_Format(PyExc_SystemError, "%s: raise_status called with CS_OK", what);
        break;
    case CS_ERR_NOMEM:
        PyErr_Format(PyExc_MemoryError, "%s: out of memory", what);
        break;
    case CS_ERR_FORMAT_SIZE: case CS_ERR_FORMAT_MAGIC: case CS_ERR_FORMAT_VERSION:
    case CS_ERR_FORMAT_CHECKSUM: case CS_ERR_FORMAT_CORRUPT:
        PyErr_Format(FormatError, "%s: %s%s%s", what, cs_status_to_string(st), sep, detail);
        break;
    case CS_ERR_STATE:
        PyErr_Format(CorrsteerError, "%s: %s%s%s", what, cs_status_to_string(st), sep, detail);
        break;
    default:
        PyErr_Format(PyExc_ValueError, "%s: %s%s%s", what, cs_status_to_string(st), sep, detail);
        break;
    }
    return NULL;
}

static PyObject *py_sae_encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sae_obj, *x_obj, *out = NULL;
    PyArrayObject *x = NULL;
    cs_py_sae_refs s;
    if (!PyArg_ParseTuple(args, "OO", &sae_obj, &x_obj)) return NULL;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = cs_py_as_array(x_obj, NPY_FLOAT32, 2, "x")) == NULL || cs_py_check_x(x, &s, "x") < 0) goto fail;
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)s.view.d_sae};
    if ((out = PyArray_SimpleNew(2, dims, NPY_FLOAT32)) == NULL) goto fail;
    cs_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cs_sae_encode(&s.view, PyArray_DATA(x), DIM(x, 0), PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { Py_CLEAR(out); cs_py_raise_status(st, "sae_encode(x)"); }
fail:
    Py_XDECREF(x);
    cs_py_sae_release(&s);
    return out;
}

static PyObject *py_sae_encode_pooled(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sae_obj, *x_obj, *mask_obj, *out = NULL;
    PyArrayObject *x = NULL, *mask = NULL;
    int mode;
    cs_py_sae_refs s;
    if (!PyArg_ParseTuple(args, "OOOi", &sae_obj, &x_obj, &mask_obj, &mode)) return NULL;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
    if ((x = cs_py_as_array(x_obj, NPY_FLOAT32, 3, "x")) == NULL || cs_py_check_x(x, &s, "x") < 0) goto fail;
    if (mask_obj != Py_None) {
        if ((mask = cs_py_as_array(mask_obj, NPY_UINT8, 2, "mask")) == NULL) goto fail;
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
    if (st != CS_OK) { Py_CLEAR(out); cs_py_raise_status(st, "sae_encode_pooled(x, mask)"); }
fail:
    Py_XDECREF(x);
    Py_XDECREF(mask);
    cs_py_sae_release(&s);
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
    cs_py_sae_refs s;
    if (!PyArg_ParseTuple(args, "OOOLi", &sae_obj, &x_obj, &seq_obj, &n_seq, &mode)) return NULL;
    if (cs_py_sae_parse(sae_obj, &s) < 0) return NULL;
    if (n_seq < 1) { PyErr_SetString(PyExc_ValueError, "n_seq must be >= 1"); goto fail; }
    if (cs_py_rows_and_seq(x_obj, seq_obj, &s, n_seq, &x, &seq) < 0) goto fail;
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
    if (st == CS_OK)  /* MAX: z is the state already; MEAN: z = sum / counts */
        st = cs_pool_finalize((cs_pool_mode)mode, zp, sum, cp, n_seq, s.view.d_sae, zp);
    Py_END_ALLOW_THREADS
    if (st != CS_OK) { cs_py_raise_status(st, "sae_pool_rows(x, seq)"); goto fail; }
    result = PyTuple_Pack(2, z, counts);
fail:
    PyMem_Free(sum);
    Py_XDECREF(z);
    Py_XDECREF(counts);
    Py_XDECREF(x);
    Py_XDECREF(seq);
    cs_py_sae_release(&s);
    return result;
}

/* ------------------------------------------------------------- steering */

static PyObject *py_steering_vector(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *W_obj, *f_obj, *c_obj, *out = NULL;
    PyArrayObject *W = NULL, *f = NULL, *c = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &W_obj, &f_obj, &c_obj)) return NULL;
    if ((W = cs_py_as_array(W_obj, NPY_FLOAT32, 2, "W_dec")) == NULL) goto fail;
    if ((f = cs_py_as_array(f_obj, NPY_INT64, 1, "features")) == NULL) goto fail;
    if ((c = cs_py_as_array(c_obj, NPY_FLOAT64, 1, "coefficients")) == NULL) goto fail;
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
    if (st != CS_OK) { Py_CLEAR(out); cs_py_raise_status(st, "steering_vector(W_dec, features, coefficients)"); }
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
    if ((v = cs_py_as_array(v_obj, NPY_FLOAT32, 1, "v")) == NULL) goto fail;
    if (DIM(v, 0) != DIM(x, 1)) {
        PyErr_Format(PyExc_ValueError, "v has d_in=%lld but x has d_in=%lld",
                     (long long)DIM(v, 0), (long long)DIM(x, 1));
        goto fail;
    }
    if (mask_obj != Py_None) {
        if ((mask = cs_py_as_array(mask_obj, NPY_UINT8, 1, "mask")) == NULL) goto fail;
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
    if (st != CS_OK) { cs_py_raise_status(st, "add_rows(x, v, mask)"); goto fail; }
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
    PyModuleDef_HEAD_INIT, "corrsteer.core._core", "corrsteer's C core (use corrsteer.core.kernels).", -1,
    module_methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    PyObject *m = NULL, *errors = NULL, *base = NULL, *bases = NULL;
    if (PyType_Ready(&cs_py_PoolerType) < 0 || PyType_Ready(&cs_py_AccumulatorType) < 0) return NULL;
    if ((errors = PyImport_ImportModule("corrsteer.errors")) == NULL) goto fail;
    if ((base = PyObject_GetAttrString(errors, "CorrsteerError")) == NULL) goto fail;
    Py_XSETREF(CorrsteerError, Py_NewRef(base));
    if ((bases = PyTuple_Pack(2, base, PyExc_ValueError)) == NULL) goto fail;
    if ((FormatError = PyErr_NewExceptionWithDoc("corrsteer.core._core.FormatError",
            "Serialised accumulator bytes are malformed (truncated, wrong magic/version, "
            "bad checksum or inconsistent content).", bases, NULL)) == NULL) goto fail;
    if ((m = PyModule_Create(&module_def)) == NULL) goto fail;
    if (PyModule_AddObjectRef(m, "FormatError", FormatError) < 0) goto fail;
    if (PyModule_AddObjectRef(m, "Pooler", (PyObject *)&cs_py_PoolerType) < 0) goto fail;
    if (PyModule_AddObjectRef(m, "Accumulator", (PyObject *)&cs_py_AccumulatorType) < 0) goto fail;
    Py_DECREF(errors); Py_DECREF(base); Py_DECREF(bases);
    return m;
fail:
    Py_XDECREF(m); Py_XDECREF(errors); Py_XDECREF(base); Py_XDECREF(bases);
    return NULL;
}
