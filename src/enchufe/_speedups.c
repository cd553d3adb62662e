/*
 * enchufe._speedups: the relay's optional compiled hot path.
 *
 * Poller is select.epoll (register, modify, unregister, poll, close, fileno) plus shortcuts:
 * poller.shortcut(src, dst, size) asks that, whenever src is reported readable and nothing
 * else (exactly EPOLLIN), the poller itself read up to size bytes from src and send them to
 * dst, without returning to Python.  That is the small-message path of a relayed stream
 * (enchufe/relay/pump.py, Pump.run): one read, one write, nothing in flight.  A ping-pong
 * through the relay then costs the six system calls it needs and no Python at all.
 *
 * Whatever the shortcut cannot finish is handed over to Python unchanged: the event is
 * returned with the HANDED bit added, the shortcut is disarmed, and poller.take(src) gives
 * what happened (the bytes read, how many of them were sent, the errno of a failed read or
 * send, the bytes moved since the last look).  The cases: EOF, a read or send error, a send
 * that took only part (or nothing: EAGAIN), a read that filled the buffer (a bulk transfer
 * begins: the pure-Python pump's general path takes over).  A read that finds nothing
 * (EAGAIN) is not reported at all: level-triggered readiness will report real data.
 *
 * When every event of an epoll_wait was served by shortcuts, poll() waits again (within what
 * is left of its timeout) instead of returning an empty list: the Python loop has nothing to
 * do for them.  A signal still interrupts: epoll_wait's EINTR runs the Python handlers
 * (PyErr_CheckSignals), and the relay's wake-up pipe is a Python descriptor.
 *
 * The module is optional: enchufe.relay.engine falls back to select.epoll and the pure-Python
 * pump when it is missing (no compiler at install) or when ENCHUFE_PURE_PYTHON=1, and the
 * tests run the relay both ways.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sys/select.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Added to the events of a shortcut that handed its work over (no EPOLL* flag uses it). */
#define HANDED (1u << 26)

enum { SERVED, NOTHING, HANDED_OVER, FAILED };

typedef struct {
    int dst;          /* -1: no shortcut */
    Py_ssize_t size;  /* most bytes one read takes */
    unsigned long long moved;  /* bytes sent by the shortcut since the last look */
    double last;      /* CLOCK_MONOTONIC seconds of its last send (0: none yet) */
    PyObject *data;   /* what the last hand-over read (bytes), or NULL */
    Py_ssize_t sent;  /* how many of them were sent */
    int read_errno;
    int send_errno;
} Shortcut;

typedef struct {
    PyObject_HEAD
    int epfd;
    Shortcut *cuts;   /* indexed by descriptor */
    Py_ssize_t ncuts;
    char *buf;
    Py_ssize_t bufsize;
    struct epoll_event *events;
    int nevents;
} Poller;

static void
cut_clear(Shortcut *c)
{
    c->dst = -1;
    c->moved = 0;
    c->last = 0.0;
    c->sent = 0;
    c->read_errno = c->send_errno = 0;
    Py_CLEAR(c->data);
}

static Shortcut *
cut_of(Poller *self, int fd)
{
    if (fd < 0 || fd >= self->ncuts)
        return NULL;
    return &self->cuts[fd];
}

static int
check_open(Poller *self)
{
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed epoll object");
        return -1;
    }
    return 0;
}

static int
fd_of(PyObject *obj)
{
    return PyObject_AsFileDescriptor(obj);
}

/* A descriptor number given as an int (-1 and an exception if it is not one). */
static int
int_of(PyObject *obj)
{
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "a descriptor number must be in 0..INT_MAX");
        return -1;
    }
    return (int)value;
}

static PyObject *
Poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Poller", kwlist))
        return NULL;
    Poller *self = (Poller *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->epfd = -1;
    Py_BEGIN_ALLOW_THREADS
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    Py_END_ALLOW_THREADS
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
free_cuts(Poller *self)
{
    for (Py_ssize_t i = 0; i < self->ncuts; i++)
        Py_CLEAR(self->cuts[i].data);
    PyMem_Free(self->cuts);
    self->cuts = NULL;
    self->ncuts = 0;
}

static void
Poller_dealloc(Poller *self)
{
    if (self->epfd >= 0)
        close(self->epfd);
    free_cuts(self);
    PyMem_Free(self->buf);
    PyMem_Free(self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Poller_close(Poller *self, PyObject *Py_UNUSED(ignored))
{
    if (self->epfd >= 0) {
        int fd = self->epfd;
        self->epfd = -1;
        if (close(fd) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    free_cuts(self);
    Py_RETURN_NONE;
}

static PyObject *
Poller_fileno(Poller *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(self->epfd);
}

static PyObject *
Poller_get_closed(Poller *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->epfd < 0);
}

/* A descriptor registered anew, or no longer watched, has no shortcut: its number may belong
 * to another connection now. */
static void
forget_cut(Poller *self, int fd)
{
    Shortcut *c = cut_of(self, fd);
    if (c != NULL)
        cut_clear(c);
}

static PyObject *
ctl(Poller *self, int op, PyObject *args, PyObject *kwds, int with_mask)
{
    static char *kwlist[] = {"fd", "eventmask", NULL};
    PyObject *obj;
    unsigned int mask = EPOLLIN | EPOLLPRI | EPOLLOUT;
    if (with_mask) {
        if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|I", kwlist, &obj, &mask))
            return NULL;
    }
    else {
        static char *one[] = {"fd", NULL};
        if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", one, &obj))
            return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    int fd = fd_of(obj);
    if (fd < 0)
        return NULL;
    struct epoll_event ev;
    ev.events = mask;
    ev.data.u64 = 0;
    ev.data.fd = fd;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = epoll_ctl(self->epfd, op, fd, op == EPOLL_CTL_DEL ? NULL : &ev);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (op != EPOLL_CTL_MOD)
        forget_cut(self, fd);
    Py_RETURN_NONE;
}

static PyObject *
Poller_register(Poller *self, PyObject *args, PyObject *kwds)
{
    return ctl(self, EPOLL_CTL_ADD, args, kwds, 1);
}

static PyObject *
Poller_modify(Poller *self, PyObject *args, PyObject *kwds)
{
    return ctl(self, EPOLL_CTL_MOD, args, kwds, 1);
}

static PyObject *
Poller_unregister(Poller *self, PyObject *args, PyObject *kwds)
{
    return ctl(self, EPOLL_CTL_DEL, args, kwds, 0);
}

static PyObject *
Poller_shortcut(Poller *self, PyObject *args)
{
    int src, dst;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "iin:shortcut", &src, &dst, &size))
        return NULL;
    if (src < 0 || dst < 0 || size <= 0 || size > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "shortcut: descriptors must be >= 0 and size in 1..16 MiB");
        return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    if (src >= self->ncuts) {
        Py_ssize_t n = self->ncuts ? self->ncuts : 64;
        while (n <= src)
            n *= 2;
        Shortcut *cuts = PyMem_Realloc(self->cuts, n * sizeof(Shortcut));
        if (cuts == NULL)
            return PyErr_NoMemory();
        for (Py_ssize_t i = self->ncuts; i < n; i++) {
            cuts[i].data = NULL;
            cut_clear(&cuts[i]);
        }
        self->cuts = cuts;
        self->ncuts = n;
    }
    if (size > self->bufsize) {
        char *buf = PyMem_Realloc(self->buf, size);
        if (buf == NULL)
            return PyErr_NoMemory();
        self->buf = buf;
        self->bufsize = size;
    }
    Shortcut *c = &self->cuts[src];
    Py_CLEAR(c->data);
    c->dst = dst;
    c->size = size;
    c->sent = 0;
    c->read_errno = c->send_errno = 0;
    Py_RETURN_NONE;
}

/* unshortcut(src) -> bytes moved since the last look; src's shortcut (if any) is gone. */
static PyObject *
Poller_unshortcut(Poller *self, PyObject *arg)
{
    int fd = int_of(arg);
    if (fd < 0)
        return NULL;
    Shortcut *c = cut_of(self, fd);
    if (c == NULL)
        return PyLong_FromLong(0);
    unsigned long long moved = c->moved;
    cut_clear(c);
    return PyLong_FromUnsignedLongLong(moved);
}

/* moved(src) -> (bytes the shortcut sent since the last look, counted from zero again; the
 * time.monotonic() of its last send, 0.0 if none). */
static PyObject *
Poller_moved(Poller *self, PyObject *arg)
{
    int fd = int_of(arg);
    if (fd < 0)
        return NULL;
    Shortcut *c = cut_of(self, fd);
    if (c == NULL)
        return Py_BuildValue("(Kd)", 0ULL, 0.0);
    unsigned long long moved = c->moved;
    c->moved = 0;
    return Py_BuildValue("(Kd)", moved, c->last);
}

/* pending(src) -> bytes the shortcut sent since the last look, left to be counted (a peek:
 * safe from another thread, which must not count them itself). */
static PyObject *
Poller_pending(Poller *self, PyObject *arg)
{
    int fd = int_of(arg);
    if (fd < 0)
        return NULL;
    Shortcut *c = cut_of(self, fd);
    return PyLong_FromUnsignedLongLong(c == NULL ? 0ULL : c->moved);
}

/* take(src) -> (data, sent, read_errno, send_errno, moved): what a hand-over left. */
static PyObject *
Poller_take(Poller *self, PyObject *arg)
{
    int fd = int_of(arg);
    if (fd < 0)
        return NULL;
    Shortcut *c = cut_of(self, fd);
    if (c == NULL || c->data == NULL) {
        PyErr_Format(PyExc_LookupError, "descriptor %d handed nothing over", fd);
        return NULL;
    }
    PyObject *result = Py_BuildValue(
        "(OniiK)", c->data, c->sent, c->read_errno, c->send_errno, c->moved);
    if (result == NULL)
        return NULL;
    cut_clear(c);
    return result;
}

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One readable shortcut: read, send; SERVED, NOTHING (EAGAIN), HANDED_OVER, or FAILED (a
 * Python exception is set). */
static int
hop(Poller *self, Shortcut *c, int fd)
{
    char *buf = self->buf;
    ssize_t n = read(fd, buf, (size_t)c->size);
    ssize_t sent = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return NOTHING;
        c->read_errno = errno;
        n = 0;
    }
    else if (n > 0 && n < c->size) {
        sent = send(c->dst, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent == n) {
            c->moved += (unsigned long long)n;
            c->last = monotonic();
            return SERVED;
        }
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                c->send_errno = errno;
            sent = 0;
        }
    }
    /* EOF, an error, a partial send, or a full read: Python's pump takes it from here. */
    c->data = PyBytes_FromStringAndSize(buf, n);
    if (c->data == NULL)
        return FAILED;
    c->sent = sent;
    c->dst = -1;
    return HANDED_OVER;
}

static int
millis(double seconds)
{
    if (seconds < 0)
        return -1;
    double ms = ceil(seconds * 1000.0);
    return ms > (double)INT_MAX ? INT_MAX : (int)ms;
}

/* poll(timeout=None, maxevents=-1) -> [(fd, events), ...], as select.epoll.poll, less the
 * events the shortcuts served. */
static PyObject *
Poller_poll(Poller *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", "maxevents", NULL};
    PyObject *timeout_obj = Py_None;
    int maxevents = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Oi:poll", kwlist, &timeout_obj, &maxevents))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    double timeout = -1.0;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (isnan(timeout)) {
            PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
            return NULL;
        }
    }
    if (maxevents == -1)
        maxevents = FD_SETSIZE - 1;
    else if (maxevents < 1) {
        PyErr_Format(PyExc_ValueError, "maxevents must be greater than 0, got %d", maxevents);
        return NULL;
    }
    if (maxevents > self->nevents) {
        struct epoll_event *events = PyMem_Realloc(self->events, maxevents * sizeof(struct epoll_event));
        if (events == NULL)
            return PyErr_NoMemory();
        self->events = events;
        self->nevents = maxevents;
    }
    double deadline = timeout > 0 ? monotonic() + timeout : 0.0;
    int ms = millis(timeout);
    struct epoll_event *events = self->events;
    for (;;) {
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(self->epfd, events, maxevents, ms);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno != EINTR)
                return PyErr_SetFromErrno(PyExc_OSError);
            if (PyErr_CheckSignals() < 0)
                return NULL;
        }
        else if (n == 0)
            return PyList_New(0);  /* timed out */
        /* The shortcuts first; what they served is marked 0, what they handed over HANDED. */
        Py_ssize_t count = 0;
        for (int i = 0; i < n; i++) {
            Shortcut *c = cut_of(self, events[i].data.fd);
            if (c != NULL && c->dst >= 0 && events[i].events == EPOLLIN) {
                int said = hop(self, c, events[i].data.fd);
                if (said == FAILED)
                    return NULL;
                if (said != HANDED_OVER) {
                    events[i].events = 0;
                    continue;
                }
                events[i].events |= HANDED;
            }
            count++;
        }
        if (count) {
            PyObject *result = PyList_New(count);
            if (result == NULL)
                return NULL;
            Py_ssize_t k = 0;
            for (int i = 0; i < n && k < count; i++) {
                if (!events[i].events)
                    continue;
                PyObject *item = Py_BuildValue("(iI)", events[i].data.fd, events[i].events);
                if (item == NULL) {
                    Py_DECREF(result);
                    return NULL;
                }
                PyList_SET_ITEM(result, k, item);
                k++;
            }
            return result;
        }
        /* Everything was served here (or a signal came and its handlers ran): wait again for
         * what is left of the timeout. */
        if (timeout == 0.0)
            return PyList_New(0);
        if (timeout > 0) {
            double left = deadline - monotonic();
            if (left <= 0)
                return PyList_New(0);
            ms = millis(left);
        }
    }
}

static PyMethodDef Poller_methods[] = {
    {"close", (PyCFunction)Poller_close, METH_NOARGS, "Close the epoll descriptor."},
    {"fileno", (PyCFunction)Poller_fileno, METH_NOARGS, "The epoll descriptor."},
    {"register", (PyCFunction)(void (*)(void))Poller_register, METH_VARARGS | METH_KEYWORDS,
     "register(fd, eventmask): as select.epoll.register; any shortcut of fd is dropped."},
    {"modify", (PyCFunction)(void (*)(void))Poller_modify, METH_VARARGS | METH_KEYWORDS,
     "modify(fd, eventmask): as select.epoll.modify."},
    {"unregister", (PyCFunction)(void (*)(void))Poller_unregister, METH_VARARGS | METH_KEYWORDS,
     "unregister(fd): as select.epoll.unregister; any shortcut of fd is dropped."},
    {"poll", (PyCFunction)(void (*)(void))Poller_poll, METH_VARARGS | METH_KEYWORDS,
     "poll(timeout=None, maxevents=-1): as select.epoll.poll, less what shortcuts served."},
    {"shortcut", (PyCFunction)Poller_shortcut, METH_VARARGS,
     "shortcut(src, dst, size): serve src's readability here: read up to size, send to dst."},
    {"unshortcut", (PyCFunction)Poller_unshortcut, METH_O,
     "unshortcut(src) -> bytes moved since the last look; the shortcut is gone."},
    {"moved", (PyCFunction)Poller_moved, METH_O,
     "moved(src) -> (bytes the shortcut sent since the last look, time.monotonic() of the last)."},
    {"pending", (PyCFunction)Poller_pending, METH_O,
     "pending(src) -> bytes the shortcut sent since the last look, not counted from zero."},
    {"take", (PyCFunction)Poller_take, METH_O,
     "take(src) -> (data, sent, read_errno, send_errno, moved) of a hand-over."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Poller_getset[] = {
    {"closed", (getter)Poller_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "enchufe._speedups.Poller",
    .tp_basicsize = sizeof(Poller),
    .tp_dealloc = (destructor)Poller_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "select.epoll with shortcuts: the relay's small-message path, compiled.",
    .tp_methods = Poller_methods,
    .tp_getset = Poller_getset,
    .tp_new = Poller_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "enchufe._speedups",
    .m_doc = "The relay's optional compiled hot path (see enchufe.relay.engine).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PollerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PollerType);
    if (PyModule_AddObject(m, "Poller", (PyObject *)&PollerType) < 0) {
        Py_DECREF(&PollerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "HANDED", HANDED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
