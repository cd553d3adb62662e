/* enchufe._tls_records: a TLS connection's records read in one call (see enchufe._tls_batch).
 *
 * A bulk reader on a socket decrypts one record (16 KiB of plaintext at most) per SSL_read_ex.
 * From Python each of those is a method call, a buffer slice and a release and retake of the GIL:
 * 16 of them for a 256 KiB buffer.  read_records() makes the calls in one loop, without the GIL,
 * and leaves to Python only what to make of the outcome.
 *
 * OpenSSL is reached through the functions of the libssl and libcrypto that Python's _ssl module
 * loaded (their addresses are given once, to bind()), so that this module needs neither
 * OpenSSL's headers nor a link to it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* Why read_records() stopped, other than an OpenSSL error (those are its SSL_get_error code);
 * enchufe._tls_batch.STOP_FULL and STOP_SHORT. */
#define STOP_FULL (-1)  /* less room than a record left */
#define STOP_SHORT (-2) /* a record shorter than the largest seen: likely the last there is */

typedef int (*read_ex_fn)(void *ssl, void *buf, size_t num, size_t *readbytes);
typedef int (*get_error_fn)(const void *ssl, int ret);
typedef unsigned long (*peek_error_fn)(void);
typedef void (*clear_error_fn)(void);

static read_ex_fn read_ex;
static get_error_fn get_error;
static peek_error_fn peek_last_error;
static clear_error_fn clear_error;

/* A PyArg_ParseTuple converter: a function's address, as an int, into a void *. */
static int
address_of(PyObject *obj, void *out)
{
    void *p = PyLong_AsVoidPtr(obj);
    if (p == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a function address is NULL");
        return 0;
    }
    *(void **)out = p;
    return 1;
}

static PyObject *
bind(PyObject *Py_UNUSED(module), PyObject *args)
{
    void *p[4];
    if (!PyArg_ParseTuple(args, "O&O&O&O&:bind", address_of, &p[0], address_of, &p[1], address_of,
                          &p[2], address_of, &p[3]))
        return NULL;
    read_ex = (read_ex_fn)p[0];
    get_error = (get_error_fn)p[1];
    peek_last_error = (peek_error_fn)p[2];
    clear_error = (clear_error_fn)p[3];
    Py_RETURN_NONE;
}

static PyObject *
read_records(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *ssl_address;
    Py_buffer view;
    Py_ssize_t offset, record, largest;
    if (read_ex == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "Ow*nnn:read_records", &ssl_address, &view, &offset, &record,
                          &largest))
        return NULL;
    void *ssl = PyLong_AsVoidPtr(ssl_address);
    if (ssl == NULL || offset < 0 || offset > view.len || record <= 0) {
        PyBuffer_Release(&view);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no SSL *, or an offset outside the buffer");
        return NULL;
    }
    char *base = (char *)view.buf;
    Py_ssize_t total = offset;
    int stop = STOP_FULL;
    unsigned long error = 0;
    Py_BEGIN_ALLOW_THREADS
    while (view.len - total >= record) {
        size_t got = 0;
        int ok = read_ex(ssl, base + total, (size_t)(view.len - total), &got);
        if (!ok) {
            stop = get_error(ssl, 0);
            error = peek_last_error();
            clear_error(); /* the outcome is told to Python by the values returned */
            break;
        }
        total += (Py_ssize_t)got;
        if ((Py_ssize_t)got < largest) {
            stop = STOP_SHORT;
            break;
        }
        largest = (Py_ssize_t)got;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return Py_BuildValue("nnik", total - offset, largest, stop, error);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(SSL_read_ex, SSL_get_error, ERR_peek_last_error, ERR_clear_error): the addresses of "
     "the OpenSSL functions Python's _ssl uses."},
    {"read_records", read_records, METH_VARARGS,
     "read_records(ssl, buffer, offset, record, largest) -> (count, largest, stop, error): "
     "decrypt records into buffer[offset:] while a whole record fits and each is no shorter than "
     "largest.  stop is -1 (full), -2 (a shorter record) or SSL_get_error's code, with "
     "ERR_peek_last_error's code."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "enchufe._tls_records",
    .m_doc = "A TLS connection's records read in one call (see enchufe._tls_batch).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__tls_records(void)
{
    return PyModule_Create(&module);
}
