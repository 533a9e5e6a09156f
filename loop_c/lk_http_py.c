/* lk_http_py.c -- the per-field work of labkit's HTTP server, in C.
 *
 * Why.  llhttp (through httptools) parses a request head in C and calls
 * back into Python for the target and once per field; labkit._http then
 * counts each against the head's limits and keeps it, and
 * labkit._wsgi_connection turns every kept field into an environ entry.
 * In Python those steps cost ~0.5 us per field on a 2-core x86-64 VM
 * (CPython 3.11, 2026): a browser's head of ten fields spent more time in
 * them than in everything else the server does for a request, the send
 * included.  Here they are:
 *
 * - HeadFields, the object that takes llhttp's target and field callbacks
 *   for a labkit._http.RequestParser: httptools calls the on_url and
 *   on_header it finds on the parser's protocol object, and these are C
 *   methods (no Python frame per call).  It keeps the head budget
 *   (head_bytes, against max_header_size, max_field_size and
 *   max_request_line), the target in ``url``, appends (name, value) to the
 *   list in ``fields`` (None after the head: a trailer field is only
 *   counted), and sets ``framing`` when the field is one
 *   on_headers_complete must read (Content-Length, Transfer-Encoding,
 *   Expect), so that the common head, which has none, is not walked a
 *   second time.  Over a limit it calls ``refuse(head_fields, kind,
 *   size)``, a Python function, which raises.  (Not a base class of the
 *   parser: a Python subclass of a C type loses CPython 3.11's fast
 *   attribute access, and the parser reads and writes its own attributes
 *   all through a request.)
 *
 * - environ_fields(), the loop of _Connection.make_environ over those
 *   fields: the environ key of each name from a cache (a miss, or a name
 *   that must be dropped, is decided by a Python function), the value
 *   decoded as latin-1, and a repeated field handed to a Python function
 *   that checks and joins it.
 *
 * The decisions -- which names are dropped, how repeats are joined, what
 * the limits are and what a refusal says -- stay in Python; this file only
 * runs the loop that applies them.  It never releases the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t head_bytes;       /* counted so far in this head */
    Py_ssize_t max_header_size;
    Py_ssize_t max_field_size;
    Py_ssize_t max_request_line;
    PyObject  *url;              /* the request target so far (bytes) */
    PyObject  *fields;           /* the list to append to, or None */
    PyObject  *refuse;           /* refuse(self, kind, size): raises */
    char       framing;          /* a framing field is in this head */
} HeadFields;

/* The kinds refuse() is told ("field" or "url"), made once. */
static PyObject *kind_field, *kind_url;

/* Call refuse(self, kind, size); NULL with its exception, or a new
 * reference to what it returned (it is meant to raise). */
static PyObject *call_refuse(HeadFields *self, PyObject *kind, Py_ssize_t size)
{
    PyObject *size_obj = PyLong_FromSsize_t(size);
    if (size_obj == NULL)
        return NULL;
    PyObject *result = PyObject_CallFunctionObjArgs(self->refuse, (PyObject *)self, kind,
                                                    size_obj, NULL);
    Py_DECREF(size_obj);
    return result;
}

/* Equal, ignoring ASCII case only?  ``lower`` is in lower case.  As
 * bytes.lower() does: strncasecmp and PyOS_strnicmp use the C locale's
 * tolower, and in a Turkish locale "I" is not "i" -- a TRANSFER-ENCODING
 * field would then go unseen, and with it the checks on the body's framing. */
static int ascii_caseless_equal(const char *name, const char *lower, Py_ssize_t len)
{
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* A field on_headers_complete reads for the framing?  (Length first: most
 * names are rejected without looking at a byte.) */
static int is_framing_field(const char *name, Py_ssize_t len)
{
    switch (len) {
    case 6:
        return ascii_caseless_equal(name, "expect", 6);
    case 14:
        return ascii_caseless_equal(name, "content-length", 14);
    case 17:
        return ascii_caseless_equal(name, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* head_bytes += size, saturating: head_bytes is writable from Python, and
 * the limits may be as large as PY_SSIZE_T_MAX. */
static void count_head(HeadFields *self, Py_ssize_t size)
{
    if (__builtin_add_overflow(self->head_bytes, size, &self->head_bytes))
        self->head_bytes = PY_SSIZE_T_MAX;
}

/* on_header(name, value): llhttp's callback for one field line.  In a
 * head (``fields`` a list) the field is kept as (name, value without
 * trailing spaces and tabs); after it (``fields`` None: a trailer) it is
 * only counted.  Raises (through ``refuse``) when the field or the head
 * is over its limit. */
static PyObject *
HeadFields_on_header(HeadFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "on_header(name, value) takes two bytes objects");
        return NULL;
    }
    PyObject *name = args[0], *value = args[1];
    Py_ssize_t size = PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
    count_head(self, size);
    if (size > self->max_field_size || self->head_bytes > self->max_header_size) {
        PyObject *refused = call_refuse(self, kind_field, size);
        if (refused == NULL)
            return NULL;
        Py_DECREF(refused);  /* (a refuse that returns lets the field in) */
    }
    PyObject *fields = self->fields;
    if (fields == Py_None)
        Py_RETURN_NONE;  /* a trailer field: counted, then dropped */
    if (fields == NULL || !PyList_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "HeadFields.fields must be a list or None");
        return NULL;
    }
    const char *text = PyBytes_AS_STRING(value);
    Py_ssize_t end = PyBytes_GET_SIZE(value);
    while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t'))
        end--;
    PyObject *kept;
    if (end == PyBytes_GET_SIZE(value)) {
        Py_INCREF(value);
        kept = value;
    } else {
        kept = PyBytes_FromStringAndSize(text, end);
        if (kept == NULL)
            return NULL;
    }
    /* Held across PyTuple_Pack: allocating a tuple may run the cyclic
     * collector, and a finalizer may set self->fields to something else. */
    Py_INCREF(fields);
    PyObject *pair = PyTuple_Pack(2, name, kept);
    Py_DECREF(kept);
    int failed = pair == NULL || PyList_Append(fields, pair) < 0;
    Py_XDECREF(pair);
    Py_DECREF(fields);
    if (failed)
        return NULL;
    if (is_framing_field(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)))
        self->framing = 1;
    Py_RETURN_NONE;
}

/* on_url(piece): llhttp's callback for the request target, which it may
 * deliver in pieces (one per feed the target spans): counted against the
 * head budget and appended to ``url``.  Raises (through ``refuse``, kind
 * "url", the target's length so far) when the head is over its budget or
 * the request line over max_request_line. */
static PyObject *HeadFields_on_url(HeadFields *self, PyObject *piece)
{
    if (!PyBytes_CheckExact(piece) || self->url == NULL || !PyBytes_CheckExact(self->url)) {
        PyErr_SetString(PyExc_TypeError, "on_url(piece) takes bytes, and url must be bytes");
        return NULL;
    }
    count_head(self, PyBytes_GET_SIZE(piece));
    PyObject *url;
    if (PyBytes_GET_SIZE(self->url) == 0) {
        Py_INCREF(piece);
        url = piece;
    } else {
        url = self->url;
        Py_INCREF(url);
        PyBytes_Concat(&url, piece);
        if (url == NULL)
            return NULL;
    }
    /* (14: the rest of the shortest request line, "GET  HTTP/1.1") */
    if (self->head_bytes > self->max_header_size
            || PyBytes_GET_SIZE(url) > self->max_request_line - 14) {
        PyObject *refused = call_refuse(self, kind_url, PyBytes_GET_SIZE(url));
        if (refused == NULL) {
            Py_DECREF(url);
            return NULL;
        }
        Py_DECREF(refused);  /* (a refuse that returns lets the piece in) */
    }
    Py_SETREF(self->url, url);
    Py_RETURN_NONE;
}

/* begin(fields): a message begins: its fields go to the list ``fields``;
 * the target, the framing flag and the head budget start again. */
static PyObject *HeadFields_begin(HeadFields *self, PyObject *fields)
{
    if (!PyList_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "HeadFields.begin(fields) takes a list");
        return NULL;
    }
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL)
        return NULL;
    Py_INCREF(fields);
    Py_XSETREF(self->fields, fields);
    Py_XSETREF(self->url, empty);
    self->framing = 0;
    self->head_bytes = 0;
    Py_RETURN_NONE;
}

/* end(): the head is complete: fields after it are trailers (counted, not
 * kept); returns the target. */
static PyObject *HeadFields_end(HeadFields *self, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(Py_None);
    Py_XSETREF(self->fields, Py_None);
    if (self->url == NULL) {
        PyErr_SetString(PyExc_TypeError, "HeadFields.url was deleted");
        return NULL;
    }
    Py_INCREF(self->url);
    return self->url;
}

static int HeadFields_traverse(HeadFields *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));  /* (a heap type's instances own a reference to it) */
    Py_VISIT(self->url);
    Py_VISIT(self->fields);
    Py_VISIT(self->refuse);
    return 0;
}

static int HeadFields_clear(HeadFields *self)
{
    Py_CLEAR(self->url);
    Py_CLEAR(self->fields);
    Py_CLEAR(self->refuse);
    return 0;
}

static void HeadFields_dealloc(HeadFields *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    HeadFields_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* HeadFields(max_header_size, max_field_size, max_request_line, refuse) */
static PyObject *HeadFields_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"max_header_size", "max_field_size", "max_request_line",
                            "refuse", NULL};
    Py_ssize_t max_header_size, max_field_size, max_request_line;
    PyObject *refuse;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnnO:HeadFields", names,
                                     &max_header_size, &max_field_size, &max_request_line,
                                     &refuse))
        return NULL;
    if (max_header_size < 1 || max_field_size < 1 || max_request_line < 1) {
        PyErr_SetString(PyExc_ValueError, "HeadFields: max_header_size, max_field_size "
                                          "and max_request_line must be >= 1");
        return NULL;
    }
    if (!PyCallable_Check(refuse)) {
        PyErr_SetString(PyExc_TypeError, "HeadFields: refuse must be callable");
        return NULL;
    }
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL)
        return NULL;
    HeadFields *self = (HeadFields *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(empty);
        return NULL;
    }
    self->max_header_size = max_header_size;
    self->max_field_size = max_field_size;
    self->max_request_line = max_request_line;
    self->url = empty;
    Py_INCREF(refuse);
    self->refuse = refuse;
    Py_INCREF(Py_None);
    self->fields = Py_None;
    return (PyObject *)self;
}

static PyMethodDef HeadFields_methods[] = {
    {"begin", (PyCFunction)HeadFields_begin, METH_O,
     "begin(fields): a message begins; its fields go to the list ``fields``."},
    {"end", (PyCFunction)HeadFields_end, METH_NOARGS,
     "end(): the head is complete; returns the target. Fields after it are trailers."},
    {"on_url", (PyCFunction)HeadFields_on_url, METH_O,
     "on_url(piece): llhttp's callback for (a piece of) the request target."},
    {"on_header", (PyCFunction)(void (*)(void))HeadFields_on_header, METH_FASTCALL,
     "on_header(name, value): llhttp's callback for one field line (see the file's comment)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef HeadFields_members[] = {
    {"head_bytes", T_PYSSIZET, offsetof(HeadFields, head_bytes), 0,
     "bytes of the head in progress counted so far"},
    {"max_header_size", T_PYSSIZET, offsetof(HeadFields, max_header_size), READONLY,
     "the most bytes a head may have"},
    {"max_field_size", T_PYSSIZET, offsetof(HeadFields, max_field_size), READONLY,
     "the longest field line"},
    {"max_request_line", T_PYSSIZET, offsetof(HeadFields, max_request_line), READONLY,
     "the longest request line"},
    {"url", T_OBJECT, offsetof(HeadFields, url), 0,
     "the request target received so far (begin() sets it to b'')"},
    {"fields", T_OBJECT, offsetof(HeadFields, fields), 0,
     "the list on_header appends (name, value) to, or None (after the head)"},
    {"framing", T_BOOL, offsetof(HeadFields, framing), 0,
     "set by on_header when a field of the framing is in the head"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot HeadFields_slots[] = {
    {Py_tp_doc, "HeadFields(max_header_size, max_field_size, max_request_line, refuse): "
                 "the target and field callbacks of labkit._http.RequestParser, and its "
                 "head budget."},
    {Py_tp_new, HeadFields_new},
    {Py_tp_dealloc, HeadFields_dealloc},
    {Py_tp_traverse, HeadFields_traverse},
    {Py_tp_clear, HeadFields_clear},
    {Py_tp_methods, HeadFields_methods},
    {Py_tp_members, HeadFields_members},
    {0, NULL},
};

static PyType_Spec HeadFields_spec = {
    "labkit._lk_http_py.HeadFields",
    sizeof(HeadFields),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    HeadFields_slots,
};

/* environ_fields(environ, fields, keys, new_key, repeated): for each
 * (name, value) in the list ``fields``: key = keys.get(name), else
 * new_key(name); an empty key drops the field; the value is decoded as
 * latin-1; environ[key] = value, unless environ has key already: then
 * repeated(environ, key, name, value) decides (it may raise). */
static PyObject *
environ_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "environ_fields(environ, fields, keys, new_key, repeated)");
        return NULL;
    }
    PyObject *environ = args[0], *fields = args[1], *keys = args[2];
    PyObject *new_key = args[3], *repeated = args[4];
    if (!PyDict_Check(environ) || !PyList_Check(fields) || !PyDict_Check(keys)) {
        PyErr_SetString(PyExc_TypeError,
                        "environ_fields: environ and keys must be dicts, fields a list");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fields); i++) {
        PyObject *pair = PyList_GET_ITEM(fields, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError,
                            "environ_fields: a field is not a (name, value) pair of bytes");
            return NULL;
        }
        Py_INCREF(pair);  /* (new_key and repeated run Python code) */
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *raw = PyTuple_GET_ITEM(pair, 1);
        PyObject *key = PyDict_GetItemWithError(keys, name);
        if (key != NULL) {
            Py_INCREF(key);
        } else if (PyErr_Occurred()
                   || (key = PyObject_CallOneArg(new_key, name)) == NULL) {
            Py_DECREF(pair);
            return NULL;
        }
        int status = 0;
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "environ_fields: a key is not a str");
            status = -1;
        } else if (PyUnicode_GET_LENGTH(key) > 0) {
            PyObject *value = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(raw),
                                                     PyBytes_GET_SIZE(raw), NULL);
            if (value == NULL) {
                status = -1;
            } else {
                PyObject *before = PyDict_GetItemWithError(environ, key);
                if (before == NULL && !PyErr_Occurred()) {
                    status = PyDict_SetItem(environ, key, value);
                } else if (before != NULL) {
                    PyObject *done = PyObject_CallFunctionObjArgs(repeated, environ, key,
                                                                  name, value, NULL);
                    status = done == NULL ? -1 : 0;
                    Py_XDECREF(done);
                } else {
                    status = -1;
                }
                Py_DECREF(value);
            }
        }
        Py_DECREF(key);
        Py_DECREF(pair);
        if (status < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"environ_fields", (PyCFunction)(void (*)(void))environ_fields, METH_FASTCALL,
     "environ_fields(environ, fields, keys, new_key, repeated): see lk_http_py.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "labkit._lk_http_py",
    "The per-field work of labkit's HTTP server, in C (see loop_c/lk_http_py.c).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lk_http_py(void)
{
    kind_field = PyUnicode_InternFromString("field");
    kind_url = PyUnicode_InternFromString("url");
    if (kind_field == NULL || kind_url == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *type = PyType_FromSpec(&HeadFields_spec);
    if (type == NULL || PyModule_AddObject(module, "HeadFields", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
