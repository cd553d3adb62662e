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
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Added to the events of a shortcut that handed its work over (no EPOLL* flag uses it). */
#define HANDED (1u << 26)

enum { SERVED, NOTHING, HANDED_OVER, PASSED, FAILED };

/* What a descriptor's shortcut does (0: it has none). */
enum { CUT_NONE, CUT_STREAM, CUT_LISTENER, CUT_UPSTREAM };

typedef struct {
    int kind;         /* CUT_*: what the shortcut does, CUT_NONE for none */
    int dst;          /* CUT_STREAM: where to send; CUT_UPSTREAM: the listener that replies */
    Py_ssize_t size;  /* most bytes one read takes (datagrams: the largest relayed) */
    long budget;      /* datagrams: events it may still serve before one goes to Python */
    /* A datagram session's counters (on its upstream's entry): requests the listener sent to
     * it, replies it sent back, the sender's address (learned from a request), dirty: in the
     * poller's list of entries with counts not yet looked at. */
    unsigned long long up_moved, up_datagrams, datagrams;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int dirty;
    PyObject *routes; /* CUT_LISTENER's descriptor: {sender: upstream descriptor} */
    PyObject *sender; /* a datagram hand-over: who sent it (None: a reply) */
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
    int *dirty;       /* descriptors whose datagram counts changed since the last look */
    Py_ssize_t ndirty, dirtycap;
    struct epoll_event *events;
    int nevents;
    double spin;      /* the longest look (epoll_wait 0) after a turn with events, in seconds */
    double spin_now;  /* the look now: adapted to how soon the next event comes (adapt_spin) */
    int active;       /* the last poll() returned events: the next one looks before it sleeps */
} Poller;

static void
cut_clear(Shortcut *c)
{
    c->kind = CUT_NONE;
    c->dst = -1;
    c->budget = 0;
    c->up_moved = c->up_datagrams = c->datagrams = 0;
    c->addrlen = 0;
    c->dirty = 0;
    Py_CLEAR(c->routes);
    Py_CLEAR(c->sender);
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

/* The entry of a descriptor past the table, which never had a shortcut: nothing armed, no
 * counts (what the methods below write to an entry leaves this one as it is). */
static Shortcut NOTHING_HERE = {.dst = -1};

/* The entry of the descriptor number ``arg`` (NOTHING_HERE past the table), its number in
 * ``*fd``; NULL and an exception if ``arg`` is not a descriptor number. */
static Shortcut *
entry_of(Poller *self, PyObject *arg, int *fd)
{
    *fd = int_of(arg);
    if (*fd < 0)
        return NULL;
    return *fd < self->ncuts ? &self->cuts[*fd] : &NOTHING_HERE;
}

/* The look adapts as KVM's halt polling does: the wait after a turn looked for spin_now, then
 * slept `slept` seconds before its event came.  Had a look of `spin` covered it, the look doubles
 * (from an eighth of spin when it was none); otherwise it halves, to none below a sixteenth.  A
 * relay whose answers come soon keeps looking; one whose next event comes late soon sleeps at
 * once, and spends no CPU on looks that find nothing. */
static void
adapt_spin(Poller *self, double slept)
{
    if (self->spin_now + slept <= self->spin) {
        double grown = self->spin_now > 0.0 ? self->spin_now * 2 : self->spin / 8;
        self->spin_now = grown < self->spin ? grown : self->spin;
    }
    else {
        self->spin_now /= 2;
        if (self->spin_now < self->spin / 16)
            self->spin_now = 0.0;
    }
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
    for (Py_ssize_t i = 0; i < self->ncuts; i++) {
        Py_CLEAR(self->cuts[i].data);
        Py_CLEAR(self->cuts[i].routes);
        Py_CLEAR(self->cuts[i].sender);
    }
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
    PyMem_Free(self->dirty);
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

/* The entry of descriptor fd, the table grown to hold it, and the read buffer to hold size
 * bytes (NULL and an exception set if memory is short). */
static Shortcut *
entry_for(Poller *self, int fd, Py_ssize_t size)
{
    if (fd >= self->ncuts) {
        Py_ssize_t n = self->ncuts ? self->ncuts : 64;
        while (n <= fd)
            n *= 2;
        Shortcut *cuts = PyMem_Realloc(self->cuts, n * sizeof(Shortcut));
        if (cuts == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = self->ncuts; i < n; i++) {
            cuts[i].data = cuts[i].routes = cuts[i].sender = NULL;
            cut_clear(&cuts[i]);
        }
        self->cuts = cuts;
        self->ncuts = n;
    }
    if (size > self->bufsize) {
        char *buf = PyMem_Realloc(self->buf, size);
        if (buf == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        self->buf = buf;
        self->bufsize = size;
    }
    return &self->cuts[fd];
}

static int
check_size(Py_ssize_t size)
{
    if (size <= 0 || size > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "a shortcut's size must be in 1..16 MiB");
        return -1;
    }
    return 0;
}

/* Arm fd's shortcut (what a hand-over left is dropped; its counts, routes and the sender's
 * address stay): NULL and an exception for bad arguments or no memory. */
static Shortcut *
arm(Poller *self, int fd, int kind, int dst, Py_ssize_t size, long budget)
{
    if (fd < 0 || dst < -1) {
        PyErr_SetString(PyExc_ValueError, "a descriptor must be >= 0");
        return NULL;
    }
    if (check_size(size) < 0 || check_open(self) < 0)
        return NULL;
    Shortcut *c = entry_for(self, fd, size);
    if (c == NULL)
        return NULL;
    Py_CLEAR(c->data);
    Py_CLEAR(c->sender);
    c->kind = kind;
    c->dst = dst;
    c->size = size;
    c->budget = budget;
    c->sent = 0;
    c->read_errno = c->send_errno = 0;
    return c;
}

static PyObject *
Poller_shortcut(Poller *self, PyObject *args)
{
    int src, dst;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "iin:shortcut", &src, &dst, &size))
        return NULL;
    if (arm(self, src, CUT_STREAM, dst < 0 ? -2 : dst, size, 0) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* unshortcut(src) -> bytes moved since the last look; src's shortcut (if any) is gone. */
static PyObject *
Poller_unshortcut(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    unsigned long long moved = c->moved;
    cut_clear(c);
    return PyLong_FromUnsignedLongLong(moved);
}

/* moved(src) -> (bytes the shortcut sent since the last look, counted from zero again; the
 * time.monotonic() of its last send, 0.0 if none). */
static PyObject *
Poller_moved(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    unsigned long long moved = c->moved;
    c->moved = 0;
    return Py_BuildValue("(Kd)", moved, c->last);
}

/* pending(src) -> bytes the shortcut sent since the last look, left to be counted (a peek:
 * safe from another thread, which must not count them itself). */
static PyObject *
Poller_pending(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(c->moved);
}

/* handed(src) -> whether src's shortcut handed work over that take(src) has not collected:
 * the relay collects every hand-over of a connection before either of its pumps reads, so that
 * bytes the poller read cannot be overtaken by bytes Python reads after them. */
static PyObject *
Poller_handed(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    return PyBool_FromLong(c->data != NULL);
}

/* take(src) -> (data, sent, read_errno, send_errno, moved): what a hand-over left. */
static PyObject *
Poller_take(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    if (c->data == NULL) {
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
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL)
        return FAILED;
    c = &self->cuts[fd];  /* an allocation may run a collection, and it Python code: look again */
    c->data = data;
    c->sent = sent;
    c->kind = CUT_NONE;
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

/* The sender of a datagram as Python's socket module gives it (recvfrom), so that it is the
 * key of the relay's session table: (host, port) for IPv4, (host, port, flowinfo, scope_id)
 * for IPv6, a path (str), an abstract name (bytes) or "" for a unix sender. */
static PyObject *
sender_of(struct sockaddr_storage *ss, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    switch (ss->ss_family) {
    case AF_INET: {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    case AF_INET6: {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue(
            "(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo), a->sin6_scope_id);
    }
    case AF_UNIX: {
        struct sockaddr_un *a = (struct sockaddr_un *)ss;
        Py_ssize_t n = (Py_ssize_t)len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (n > 0 && a->sun_path[0] == 0)
            return PyBytes_FromStringAndSize(a->sun_path, n);
        return PyUnicode_DecodeFSDefault(a->sun_path);  /* the storage was zeroed: terminated */
    }
    default:
        Py_RETURN_NONE;
    }
}

/* A datagram session's counts changed: its descriptor joins the list dirty() reads. */
static int
mark_dirty(Poller *self, int fd, Shortcut *u)
{
    if (u->dirty)
        return 0;
    if (self->ndirty == self->dirtycap) {
        Py_ssize_t cap = self->dirtycap ? self->dirtycap * 2 : 64;
        int *dirty = PyMem_Realloc(self->dirty, cap * sizeof(int));
        if (dirty == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->dirty = dirty;
        self->dirtycap = cap;
    }
    self->dirty[self->ndirty++] = fd;
    u->dirty = 1;
    return 0;
}

/* A datagram the shortcut read and could not finish: Python's from here. */
static int
hand_datagram(Poller *self, int fd, ssize_t n, PyObject *sender)
{
    Shortcut *c = &self->cuts[fd];
    PyObject *data = PyBytes_FromStringAndSize(self->buf, n > 0 && n <= c->size ? n : 0);
    if (data == NULL) {
        Py_XDECREF(sender);
        return FAILED;
    }
    c = &self->cuts[fd];  /* an allocation may run a collection, and it Python code: look again */
    c->data = data;
    c->sent = n > 0 ? n : 0;  /* the datagram's whole size (MSG_TRUNC) */
    if (sender == NULL) {
        sender = Py_None;
        Py_INCREF(sender);
    }
    c->sender = sender;
    c->kind = CUT_NONE;
    return HANDED_OVER;
}

/* A listener's datagram: sent on by the upstream its sender's route names. */
static int
hop_listener(Poller *self, Shortcut *c, int fd)
{
    if (c->budget <= 0)
        return PASSED;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len = sizeof(ss);
    ssize_t n = recvfrom(fd, self->buf, (size_t)c->size, MSG_TRUNC | MSG_DONTWAIT, (struct sockaddr *)&ss, &len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return NOTHING;
        c->read_errno = errno;
        c->budget--;
        return hand_datagram(self, fd, 0, NULL);
    }
    c->budget--;
    PyObject *sender = sender_of(&ss, len);
    if (sender == NULL)
        return FAILED;
    c = &self->cuts[fd];  /* as after every allocation (see hand_datagram) */
    if (n <= c->size && c->routes != NULL) {
        PyObject *route = PyDict_GetItemWithError(c->routes, sender);
        if (route == NULL && PyErr_Occurred()) {
            Py_DECREF(sender);
            return FAILED;
        }
        Shortcut *u = route == NULL ? NULL : cut_of(self, (int)PyLong_AsLong(route));
        if (u != NULL) {
            int ufd = (int)(u - self->cuts);
            ssize_t sent = send(ufd, self->buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (sent == n) {
                u->up_moved += (unsigned long long)n;
                u->up_datagrams++;
                u->last = monotonic();
                memcpy(&u->addr, &ss, len);
                u->addrlen = len;
                Py_DECREF(sender);
                return mark_dirty(self, ufd, u) < 0 ? FAILED : SERVED;
            }
            c->send_errno = errno;
        }
    }
    return hand_datagram(self, fd, n, sender);
}

/* A reply on a session's upstream: sent to the session's sender through the listener. */
static int
hop_upstream(Poller *self, Shortcut *c, int fd)
{
    if (c->budget <= 0)
        return PASSED;
    ssize_t n = recv(fd, self->buf, (size_t)c->size, MSG_TRUNC | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return NOTHING;
        c->read_errno = errno;
        c->budget--;
        return hand_datagram(self, fd, 0, NULL);
    }
    c->budget--;
    if (n <= c->size && c->addrlen > 0) {
        ssize_t sent = sendto(
            c->dst, self->buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&c->addr, c->addrlen);
        if (sent == n) {
            c->moved += (unsigned long long)n;
            c->datagrams++;
            c->last = monotonic();
            return mark_dirty(self, fd, c) < 0 ? FAILED : SERVED;
        }
        c->send_errno = errno;
    }
    return hand_datagram(self, fd, n, NULL);
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
    /* This wait follows a turn with events (served by the shortcuts or by Python: the answer to
     * what either passed on is as likely to come soon).  It looks without sleeping until
     * spin_until, and how long it then sleeps adapts the look (adapt_spin). */
    int after_turn = self->active && self->spin > 0.0;
    self->active = 0;
    double spin_until = after_turn && self->spin_now > 0.0 && timeout != 0.0 ? monotonic() + self->spin_now : 0.0;
    for (;;) {
        int n;
        int wait_ms = spin_until > 0.0 ? 0 : ms;
        double slept_from = after_turn && wait_ms != 0 ? monotonic() : 0.0;
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(self->epfd, events, maxevents, wait_ms);
        Py_END_ALLOW_THREADS
        if (slept_from > 0.0 && n >= 0) {
            double slept = monotonic() - slept_from;
            if (n > 0 || slept > self->spin) {  /* a timer's short timeout says nothing */
                adapt_spin(self, slept);
                after_turn = 0;
            }
        }
        if (n < 0) {
            if (errno != EINTR)
                return PyErr_SetFromErrno(PyExc_OSError);
            if (PyErr_CheckSignals() < 0)
                return NULL;
        }
        else if (n == 0) {
            if (spin_until <= 0.0)
                return PyList_New(0);  /* timed out */
            double now = monotonic();
            if (timeout > 0 && now >= deadline)
                return PyList_New(0);
            if (now < spin_until)
                continue;  /* look again at once */
            spin_until = 0.0;  /* nothing came: sleep for what is left */
            if (timeout > 0)
                ms = millis(deadline - now);
            continue;
        }
        /* The shortcuts first; what they served is marked 0, what they handed over HANDED. */
        Py_ssize_t count = 0;
        for (int i = 0; i < n; i++) {
            Shortcut *c = cut_of(self, events[i].data.fd);
            if (c != NULL && c->kind != CUT_NONE && events[i].events == EPOLLIN) {
                int fd = events[i].data.fd;
                int said = c->kind == CUT_STREAM     ? hop(self, c, fd)
                           : c->kind == CUT_LISTENER ? hop_listener(self, c, fd)
                                                     : hop_upstream(self, c, fd);
                if (said == FAILED)
                    return NULL;
                if (said == SERVED || said == NOTHING) {
                    events[i].events = 0;
                    continue;
                }
                if (said == HANDED_OVER)
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
            self->active = 1;
            return result;
        }
        /* Everything was served here (or a signal came and its handlers ran): wait again for
         * what is left of the timeout, first without sleeping for a moment (spin): the answer
         * to what was just passed on often comes within it, and a sleeping process is woken
         * tens of microseconds later than one that looks. */
        if (timeout == 0.0)
            return PyList_New(0);
        if (n > 0 && self->spin > 0.0) {
            after_turn = 1;
            spin_until = self->spin_now > 0.0 ? monotonic() + self->spin_now : 0.0;
        }
        if (timeout > 0) {
            double left = deadline - monotonic();
            if (left <= 0)
                return PyList_New(0);
            ms = millis(left);
        }
    }
}

/* datagrams_in(listener, size, budget): serve the listener's datagrams whose sender has a
 * route (route()), up to budget events; the others, and the event after the budget, are
 * Python's. */
static PyObject *
Poller_datagrams_in(Poller *self, PyObject *args)
{
    int fd;
    Py_ssize_t size;
    long budget;
    if (!PyArg_ParseTuple(args, "inl:datagrams_in", &fd, &size, &budget))
        return NULL;
    Shortcut *c = arm(self, fd, CUT_LISTENER, -1, size, budget);
    if (c == NULL)
        return NULL;
    if (c->routes == NULL && (c->routes = PyDict_New()) == NULL)
        return NULL;  /* armed with no routes: every datagram goes to Python */
    Py_RETURN_NONE;
}

/* replies(upstream, listener, size, budget): serve the upstream's datagrams (replies) by
 * sending them to the sender its last served request came from, through the listener. */
static PyObject *
Poller_replies(Poller *self, PyObject *args)
{
    int fd, listener;
    Py_ssize_t size;
    long budget;
    if (!PyArg_ParseTuple(args, "iinl:replies", &fd, &listener, &size, &budget))
        return NULL;
    if (arm(self, fd, CUT_UPSTREAM, listener < 0 ? -2 : listener, size, budget) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* route(listener, sender, upstream): the listener's datagrams from sender go to upstream. */
static PyObject *
Poller_route(Poller *self, PyObject *args)
{
    int fd, upstream;
    PyObject *sender;
    if (!PyArg_ParseTuple(args, "iOi:route", &fd, &sender, &upstream))
        return NULL;
    if (fd < 0 || upstream < 0) {
        PyErr_SetString(PyExc_ValueError, "a descriptor must be >= 0");
        return NULL;
    }
    if (check_open(self) < 0 || entry_for(self, upstream, 1) == NULL)
        return NULL;
    Shortcut *c = entry_for(self, fd, 1);
    if (c == NULL)
        return NULL;
    if (c->routes == NULL && (c->routes = PyDict_New()) == NULL)
        return NULL;
    PyObject *value = PyLong_FromLong(upstream);
    if (value == NULL)
        return NULL;
    int rc = PyDict_SetItem(c->routes, sender, value);
    Py_DECREF(value);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* unroute(listener, sender): that sender's datagrams are Python's again. */
static PyObject *
Poller_unroute(Poller *self, PyObject *args)
{
    int fd;
    PyObject *sender;
    if (!PyArg_ParseTuple(args, "iO:unroute", &fd, &sender))
        return NULL;
    Shortcut *c = cut_of(self, fd);
    if (c != NULL && c->routes != NULL) {
        if (PyDict_DelItem(c->routes, sender) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return NULL;
            PyErr_Clear();
        }
    }
    Py_RETURN_NONE;
}

/* disarm(fd) -> events its budget had left; its routes and counts stay. */
static PyObject *
Poller_disarm(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    if (c->kind == CUT_NONE)
        return PyLong_FromLong(0);
    long left = c->budget > 0 ? c->budget : 0;
    c->kind = CUT_NONE;
    return PyLong_FromLong(left);
}

/* take_datagram(fd) -> (data, size, sender, read_errno, send_errno, budget left). */
static PyObject *
Poller_take_datagram(Poller *self, PyObject *arg)
{
    int fd;
    Shortcut *c = entry_of(self, arg, &fd);
    if (c == NULL)
        return NULL;
    if (c->data == NULL || c->sender == NULL) {
        PyErr_Format(PyExc_LookupError, "descriptor %d handed no datagram over", fd);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(OnOiil)", c->data, c->sent, c->sender, c->read_errno,
                                     c->send_errno, c->budget > 0 ? c->budget : 0L);
    if (result == NULL)
        return NULL;
    Py_CLEAR(c->data);
    Py_CLEAR(c->sender);
    c->sent = 0;
    c->read_errno = c->send_errno = 0;
    return result;
}

/* dirty() -> [(upstream, bytes to it, datagrams to it, bytes back, datagrams back, last)]:
 * the datagram sessions whose shortcuts moved something since the last look, counted from
 * zero again. */
static PyObject *
Poller_dirty(Poller *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyList_New(0);
    if (result == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->ndirty; i++) {
        int fd = self->dirty[i];
        Shortcut *u = cut_of(self, fd);
        if (u == NULL || !u->dirty)
            continue;
        PyObject *item = Py_BuildValue("(iKKKKd)", fd, u->up_moved, u->up_datagrams, u->moved,
                                       u->datagrams, u->last);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(item);
        u->up_moved = u->up_datagrams = u->moved = u->datagrams = 0;
        u->dirty = 0;
    }
    self->ndirty = 0;
    return result;
}

/* dirty_totals() -> (bytes to targets, datagrams to targets, bytes back, datagrams back) not
 * looked at yet: a peek (safe from another thread, which must not count them itself). */
static PyObject *
Poller_dirty_totals(Poller *self, PyObject *Py_UNUSED(ignored))
{
    unsigned long long up = 0, up_n = 0, down = 0, down_n = 0;
    for (Py_ssize_t i = 0; i < self->ndirty; i++) {
        Shortcut *u = cut_of(self, self->dirty[i]);
        if (u == NULL || !u->dirty)
            continue;
        up += u->up_moved;
        up_n += u->up_datagrams;
        down += u->moved;
        down_n += u->datagrams;
    }
    return Py_BuildValue("(KKKK)", up, up_n, down, down_n);
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
    {"datagrams_in", (PyCFunction)Poller_datagrams_in, METH_VARARGS,
     "datagrams_in(listener, size, budget): serve the listener's routed datagrams."},
    {"replies", (PyCFunction)Poller_replies, METH_VARARGS,
     "replies(upstream, listener, size, budget): serve an upstream's replies."},
    {"route", (PyCFunction)Poller_route, METH_VARARGS,
     "route(listener, sender, upstream): the sender's datagrams go to upstream."},
    {"unroute", (PyCFunction)Poller_unroute, METH_VARARGS,
     "unroute(listener, sender): the sender's datagrams are Python's again."},
    {"disarm", (PyCFunction)Poller_disarm, METH_O,
     "disarm(fd) -> the budget left; routes and counts stay."},
    {"take_datagram", (PyCFunction)Poller_take_datagram, METH_O,
     "take_datagram(fd) -> (data, size, sender, read_errno, send_errno, budget left)."},
    {"dirty", (PyCFunction)Poller_dirty, METH_NOARGS,
     "dirty() -> the datagram sessions' counts since the last look."},
    {"dirty_totals", (PyCFunction)Poller_dirty_totals, METH_NOARGS,
     "dirty_totals() -> (bytes up, datagrams up, bytes down, datagrams down), a peek."},
    {"handed", (PyCFunction)Poller_handed, METH_O,
     "handed(src) -> whether src's shortcut handed work over that take(src) has not collected."},
    {"take", (PyCFunction)Poller_take, METH_O,
     "take(src) -> (data, sent, read_errno, send_errno, moved) of a hand-over."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Poller_get_spin(Poller *self, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(self->spin);
}

static int
Poller_set_spin(Poller *self, PyObject *value, void *Py_UNUSED(closure))
{
    double spin = value == NULL ? 0.0 : PyFloat_AsDouble(value);
    if (spin == -1.0 && PyErr_Occurred())
        return -1;
    if (!(spin >= 0.0 && spin <= 0.01)) {
        PyErr_SetString(PyExc_ValueError, "spin must be 0 to 0.01 seconds");
        return -1;
    }
    self->spin = self->spin_now = spin;
    return 0;
}

static PyObject *
Poller_get_spin_now(Poller *self, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(self->spin_now);
}

static PyGetSetDef Poller_getset[] = {
    {"closed", (getter)Poller_get_closed, NULL, "True once closed.", NULL},
    {"spin", (getter)Poller_get_spin, (setter)Poller_set_spin,
     "The longest look, in seconds, without sleeping after a turn with events (0: none).", NULL},
    {"spin_now", (getter)Poller_get_spin_now, NULL,
     "The look now: between 0 and spin, adapted to how soon events come after a turn.", NULL},
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
