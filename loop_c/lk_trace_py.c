/* lk_trace_py.c -- labkit._lk_trace_py: write trace records without
 * leaving the GIL.
 *
 * Why a second extension module.  The hub's hooks write one record per
 * switch into a greenlet, so the cost of a record is added to every
 * switch.  Through cffi (labkit._lk_loop) a call to lk_trace_record costs
 * ~150-190 ns on the machine we measured, most of it cffi releasing the GIL before the call and
 * taking it back after -- for a function that runs ~20 ns.  cffi has no
 * per-function way to keep the GIL, and a cffi function cannot hand a
 * Python object back.  So this small module is plain CPython C API: one
 * builtin, record(kind, a, arg, b), called with METH_FASTCALL (no tuple
 * for the arguments) and never releasing the GIL.  It writes with the very
 * code lk_trace_record uses (lk__trace_write in lk_trace_ring.h), into the
 * ring that labkit._lk_loop allocated.
 *
 * How Python gets a writer for one ring (tracing/recorder.py):
 *
 *     ring = lib.lk_trace_new(capacity)                 # cffi, owns the ring
 *     record = _lk_trace_py.writer(int(ffi.cast("uintptr_t", ring)))
 *     record(lib.LK_TR_RESUME, id(g), lib.LK_WHY_READY, 0)
 *
 * writer() returns the builtin bound to the ring's address (its `self`),
 * the way a method is bound to its object, so a call passes exactly the
 * four arguments the hooks have.  The address is not a reference: the
 * recorder must unhook every writer before it frees the ring.
 *
 * The hooks' most frequent record, a greenlet's resume after a wait, has
 * builtins of their own that do the whole hook in one call (see "resume
 * records" below):
 *
 *     resume, resume_fd = _lk_trace_py.resumers(address, recorder.labels)
 *     resume(g, lib.LK_WHY_WAITER, "Event")       # a = id(g), b = labels[...]
 *     resume_fd(g, lib.LK_WHY_WAITER, fd, READ)   # b = labels[(fd, READ)]
 *
 * While a stall threshold is set (a blocking monitor watches the ring),
 * the resume writers also note where the resumed greenlet resumed: its
 * "resume site" (see "resume sites" below; sites(), configure_sites(),
 * release_sites()).
 *
 * Contract: call these with the GIL held (any Python code does), from any
 * thread.  They raise OverflowError/TypeError for arguments that do not
 * fit the record's fields (resume: also whatever the label lookup raises,
 * e.g. TypeError for an unhashable label), and never anything else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>   /* 3.10: PyFrameObject's fields */
/* The resume sites' walk reads the interpreter's frames (see there); it
 * knows their layout in 3.10-3.13.  3.14 moved them again (stack refs,
 * pycore_interpframe.h): there the writers take no site, and a block is
 * still named (greenlet, resume record) but has no start line. */
#if PY_VERSION_HEX >= 0x030E0000
#  define LK_SITES 0
#else
#  define LK_SITES 1
#  if PY_VERSION_HEX >= 0x030B0000
#    define Py_BUILD_CORE
#    include "internal/pycore_frame.h"
#    if PY_VERSION_HEX < 0x030D0000
#      include "internal/pycore_code.h"   /* the frame locals' kinds (3.11: not in the above) */
#    endif
#  endif
#endif
#include <stdint.h>
#include <string.h>

#include "lk_trace_ring.h"


/* ------------------------------------------------------------ resume sites
 *
 * The blocking monitor reports a block with the line where it *started*:
 * where its greenlet resumed, the line after its last switch -- not only
 * where a stack sample later found it.  A sampler cannot know the former:
 * by the time it looks, the park function has returned and the user frame
 * that called it has moved on (or returned too).  So the resume writers
 * note it as they write the resume record, from inside the resumed
 * greenlet: the frames on its stack then (the park function first), each
 * as (code, last instruction, key), up to the first frame of user code --
 * a frame whose file is not under one of the prefixes configure_sites()
 * set (labkit/, tracing/, the standard library, site-packages) -- and at
 * most LK_SITE_DEPTH.  Codes are strong references (a notebook cell's
 * code may be freed once it is re-run); frames are not kept, only a key
 * (an address: see the walk below), so no frame or local outlives its
 * function because of us.
 *
 * Cost: nothing unless a stall threshold is set (a blocking monitor
 * watches the ring).  Then, per resume, a walk of the few frames up to
 * the user's (see the walk below: a few loads a level); a level whose
 * code is the one the previous site had there reuses its classification,
 * and files are classified once each anyway (a pointer-keyed cache of
 * LK_SITE_FILES slots holding their co_filename).
 *
 * The newest site is `ring->site`.  When a stall is noted (lk_trace_ring.h)
 * the site of the greenlet that ran when the gap began is still there; the
 * next resume writer, before it replaces it, sees that the stall count
 * moved and that the stall names this site's resume record, and copies it
 * to `ring->stall_site`.  So a watchdog that got no CPU during the block
 * (a loaded machine, or the block held the GIL throughout) still finds it
 * afterwards, by the stall's resume seq (sites()). */

static void site_clear(lk_trace_site *site)
{
    for (uint32_t i = 0; i < LK_SITE_DEPTH; i++)
        Py_CLEAR(*(PyObject **)&site->code[i]);
    site->n = 0;
    site->seq = UINT64_MAX;
}

static void site_copy(lk_trace_site *to, const lk_trace_site *from)
{
    PyObject *old[LK_SITE_DEPTH];
    for (uint32_t i = 0; i < LK_SITE_DEPTH; i++) {
        old[i] = (PyObject *)to->code[i];
        to->code[i] = from->code[i];
        Py_XINCREF((PyObject *)to->code[i]);
        to->lasti[i] = from->lasti[i];
        to->frame[i] = from->frame[i];
        to->user[i] = from->user[i];
    }
    to->n = from->n;
    to->seq = from->seq;
    to->gid = from->gid;
    for (uint32_t i = 0; i < LK_SITE_DEPTH; i++)   /* last: a dealloc may run code */
        Py_XDECREF(old[i]);
}

/* 1 if `code`'s file is user code (outside the configured prefixes), 0 if
 * not; -1 (no exception) if unknown and not cacheable. */
static int is_user_code(lk_trace *t, PyCodeObject *code)
{
    PyObject *file = code->co_filename;
    if (t->site_prefixes == NULL || file == NULL || !PyUnicode_Check(file))
        return -1;
    size_t slot = ((uintptr_t)file >> 4) & (LK_SITE_FILES - 1);
    for (size_t probe = 0; probe < 8; probe++, slot = (slot + 1) & (LK_SITE_FILES - 1)) {
        if (t->file_key[slot] == file)
            return t->file_user[slot];
        if (t->file_key[slot] == NULL)
            break;
    }
    /* Not cached: classify, and cache it if a slot of its probe run is free. */
    int user = 1;
    PyObject *prefixes = (PyObject *)t->site_prefixes;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        Py_ssize_t match = PyUnicode_Tailmatch(file, PyTuple_GET_ITEM(prefixes, i), 0,
                                               PY_SSIZE_T_MAX, -1);
        if (match < 0) {
            PyErr_Clear();
            return -1;
        }
        if (match) {
            user = 0;
            break;
        }
    }
    if (t->file_key[slot] == NULL) {
        Py_INCREF(file);
        t->file_key[slot] = file;
        t->file_user[slot] = (uint8_t)user;
    }
    return user;
}

/* Walking the frames of the running greenlet, cheaply.  Through the public
 * API (PyEval_GetFrame, PyFrame_GetBack) each step makes a frame object if
 * the interpreter has none yet and counts references: ~130 instructions a
 * level, which the sleep(0) benchmark's ~9,000 per switch could not carry
 * (callgrind).  So on 3.11+ the walk reads the interpreter's own frames
 * (_PyInterpreterFrame, internal/pycore_frame.h, as greenlet itself does):
 * a few loads a level, nothing made, nothing counted.  On 3.10 every frame
 * is an object already and its fields are public.  A level's key is the
 * interpreter frame's address (the frame object's on 3.10): frame_key()
 * gives the same for a live frame object, so the monitor can tell whether
 * a sampled frame is the one the greenlet resumed in. */
#if !LK_SITES
typedef PyFrameObject lk_iframe;

static inline lk_iframe *top_iframe(void)
{
    return NULL;   /* no walk: an empty site */
}

static inline PyCodeObject *iframe_code(lk_iframe *f)
{
    (void)f;
    return NULL;
}

static inline int32_t iframe_lasti(lk_iframe *f)
{
    (void)f;
    return -1;
}

#  define IFRAME_BACK(f) ((lk_iframe *)NULL)
#  define FRAME_KEY(frame) ((uintptr_t)(frame))
#elif PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame lk_iframe;

static inline lk_iframe *top_iframe(void)
{
    PyThreadState *ts = PyThreadState_GET();
#  if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#  else
    return ts->cframe->current_frame;
#  endif
}

/* Its code, or NULL for a frame that is not (yet) a Python function's:
 * a C-stack shim, or one still being set up (what PyFrame_GetBack skips). */
static inline PyCodeObject *iframe_code(lk_iframe *f)
{
#  if PY_VERSION_HEX >= 0x030C0000
    if (f->owner == FRAME_OWNED_BY_CSTACK)
        return NULL;
#  endif
#  if PY_VERSION_HEX >= 0x030D0000
    if (!PyCode_Check(f->f_executable))
        return NULL;
#  endif
    if (_PyFrame_IsIncomplete(f))
        return NULL;
#  if PY_VERSION_HEX >= 0x030D0000
    return (PyCodeObject *)f->f_executable;
#  else
    return f->f_code;
#  endif
}

static inline int32_t iframe_lasti(lk_iframe *f)
{
    return (int32_t)(_PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
}

#  define IFRAME_BACK(f) ((f)->previous)
#  define FRAME_KEY(frame) ((uintptr_t)((PyFrameObject *)(frame))->f_frame)
#else
typedef PyFrameObject lk_iframe;

static inline lk_iframe *top_iframe(void)
{
    return PyEval_GetFrame();   /* borrowed */
}

static inline PyCodeObject *iframe_code(lk_iframe *f)
{
    return f->f_code;
}

static inline int32_t iframe_lasti(lk_iframe *f)
{
    return f->f_lasti < 0 ? -1 : (int32_t)(f->f_lasti * (int)sizeof(_Py_CODEUNIT));
}

#  define IFRAME_BACK(f) ((f)->f_back)
#  define FRAME_KEY(frame) ((uintptr_t)(frame))
#endif

/* Note the resume site of record `seq` (greenlet `gid`); see above. */
static void take_site(lk_trace *t, uint64_t seq, int64_t gid)
{
    lk_trace_site *site = &t->site;
    uint64_t stalls = atomic_load_explicit(&t->stall_seq, memory_order_acquire);
    if (stalls != t->site_stalls && !(stalls & 1)) {
        t->site_stalls = stalls;
        /* a stall was noted since: if it began in this site's run, keep it */
        if (site->seq != UINT64_MAX && atomic_load(&t->stall_resume_seq) == site->seq)
            site_copy(&t->stall_site, site);
    }
    PyObject *old[LK_SITE_DEPTH];
    uint32_t n = 0, n_old = 0;
    for (lk_iframe *f = top_iframe(); f != NULL && n < LK_SITE_DEPTH; f = IFRAME_BACK(f)) {
        PyCodeObject *code = iframe_code(f);
        if (code == NULL)
            continue;
        if ((PyCodeObject *)site->code[n] != code) {   /* a new chain from here */
            if (site->code[n] != NULL)
                old[n_old++] = (PyObject *)site->code[n];
            Py_INCREF(code);
            site->code[n] = code;
            site->user[n] = (uint8_t)(is_user_code(t, code) == 1);
        }
        site->lasti[n] = iframe_lasti(f);
        site->frame[n] = (uintptr_t)f;
        if (site->user[n++])
            break;   /* the user frame the park call came from: the site */
    }
    for (uint32_t i = n; i < site->n; i++) {   /* levels this site lacks */
        if (site->code[i] != NULL)
            old[n_old++] = (PyObject *)site->code[i];
        site->code[i] = NULL;
    }
    site->n = n;
    site->seq = seq;
    site->gid = gid;
    while (n_old > 0)   /* last: a dealloc may run code */
        Py_DECREF(old[--n_old]);
}

/* Write a resume record, and take its site while stalls are watched. */
static inline void write_resume(lk_trace *t, int64_t gid, uint32_t why, int64_t b)
{
    uint64_t seq = lk__trace_write(t, lk_now_ns(), LK_TR_RESUME, gid, why, b);
    if (t->stall_ns > 0 && why != LK_WHY_SWITCH)
        take_site(t, seq, gid);
}

static PyObject *site_tuple(const lk_trace_site *site)
{
    PyObject *frames = PyTuple_New(site->n);
    if (frames == NULL)
        return NULL;
    for (uint32_t i = 0; i < site->n; i++) {
        PyObject *code = (PyObject *)site->code[i];
        PyObject *item = Py_BuildValue("(Oik)", code != NULL ? code : Py_None,
                                       (int)site->lasti[i], (unsigned long)site->frame[i]);
        if (item == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        PyTuple_SET_ITEM(frames, i, item);
    }
    PyObject *result = Py_BuildValue("(KLN)", (unsigned long long)site->seq,
                                     (long long)site->gid, frames);
    return result;
}

static lk_trace *ring_at(PyObject *address, const char *who)
{
    if (!PyLong_Check(address)) {
        PyErr_Format(PyExc_TypeError, "%s() takes the ring's address as an int", who);
        return NULL;
    }
    lk_trace *ring = (lk_trace *)PyLong_AsVoidPtr(address);
    if (ring == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "%s() needs a ring, not NULL", who);
    return ring;
}

/* frame_key(frame) -> int: the key a resume site gives a level that is this
 * live frame (see the frame walk above). */
static PyObject *frame_key(PyObject *module, PyObject *frame)
{
    (void)module;
    if (!PyFrame_Check(frame)) {
        PyErr_Format(PyExc_TypeError, "frame_key() takes a frame, not %.100s",
                     Py_TYPE(frame)->tp_name);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong((unsigned long long)FRAME_KEY(frame));
}

/* sites(address, seq) -> (seq, gid, ((code, lasti, frame_key), ...)) or None */
static PyObject *sites(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "sites() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    lk_trace *t = ring_at(args[0], "sites");
    if (t == NULL)
        return NULL;
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[1]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (t->site.seq == seq && seq != UINT64_MAX)
        return site_tuple(&t->site);
    if (t->stall_site.seq == seq && seq != UINT64_MAX)
        return site_tuple(&t->stall_site);
    Py_RETURN_NONE;
}

/* configure_sites(address, prefixes): files under these are not user code */
static PyObject *configure_sites(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "configure_sites() takes 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    lk_trace *t = ring_at(args[0], "configure_sites");
    if (t == NULL)
        return NULL;
    PyObject *prefixes = args[1];
    if (!PyTuple_Check(prefixes)) {
        PyErr_Format(PyExc_TypeError, "configure_sites(): prefixes must be a tuple, not %.100s",
                     Py_TYPE(prefixes)->tp_name);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(prefixes, i))) {
            PyErr_SetString(PyExc_TypeError, "configure_sites(): prefixes must be str");
            return NULL;
        }
    }
    for (size_t i = 0; i < LK_SITE_FILES; i++)   /* classified by the old prefixes */
        Py_CLEAR(*(PyObject **)&t->file_key[i]);
    PyObject *old = (PyObject *)t->site_prefixes;
    Py_INCREF(prefixes);
    t->site_prefixes = prefixes;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* release_sites(address): drop every reference the ring's sites hold */
static PyObject *release_sites(PyObject *module, PyObject *address)
{
    (void)module;
    lk_trace *t = ring_at(address, "release_sites");
    if (t == NULL)
        return NULL;
    site_clear(&t->site);
    site_clear(&t->stall_site);
    for (size_t i = 0; i < LK_SITE_FILES; i++)
        Py_CLEAR(*(PyObject **)&t->file_key[i]);
    Py_CLEAR(*(PyObject **)&t->site_prefixes);
    Py_RETURN_NONE;
}

/* record(kind, a, arg, b): append one record to the ring `self` points to. */
static PyObject *record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "record() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    lk_trace *ring = (lk_trace *)PyLong_AsVoidPtr(self);
    unsigned long kind = PyLong_AsUnsignedLong(args[0]);
    long long a = PyLong_AsLongLong(args[1]);
    unsigned long arg = PyLong_AsUnsignedLong(args[2]);
    long long b = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())   /* one check for the four conversions */
        return NULL;
    if (kind > UINT32_MAX || arg > UINT32_MAX) {   /* the record's fields are 32-bit */
        PyErr_SetString(PyExc_OverflowError, "record(): kind and arg must fit in 32 bits");
        return NULL;
    }
    if (kind == LK_TR_RESUME)
        write_resume(ring, a, (uint32_t)arg, b);
    else
        lk__trace_write(ring, lk_now_ns(), (uint32_t)kind, a, (uint32_t)arg, b);
    Py_RETURN_NONE;
}

static PyMethodDef record_def = {
    "record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
    "record(kind, a, arg, b): write one trace record into the bound ring.",
};

/* writer(address): the record builtin, bound to the ring at `address`. */
static PyObject *writer(PyObject *module, PyObject *address)
{
    (void)module;
    if (!PyLong_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "writer() takes the ring's address as an int");
        return NULL;
    }
    if (PyLong_AsVoidPtr(address) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "writer() needs a ring, not NULL");
        return NULL;
    }
    return PyCFunction_New(&record_def, address);
}

/* ------------------------------------------------------------ resume records
 *
 * The hooks' most frequent record is a greenlet's resume after a wait:
 * LK_TR_RESUME with a = id(g), arg = why (LK_WHY_*), b = the number of
 * the label it waited on in the recorder's label table (a dict subclass
 * whose __missing__ numbers new labels, tracing/recorder.py).  It used to
 * be a Python helper,
 *     record(LK_TR_RESUME, id(g), why, tracer.labels[label])
 * a frame, two global and two attribute lookups and two builtin calls
 * around a ~60 ns write: ~250 ns per wake-up, the larger part of the
 * flight recorder's cost (issue 20).  Here it is one C call:
 *
 *   resume(g, why, label)         labels[label]: a known label is read with
 *                                 PyDict_GetItemWithError (no Python code
 *                                 runs); a new one goes through
 *                                 PyObject_GetItem, i.e. __missing__;
 *   resume_fd(g, why, fd, event)  the label (fd, event) of an fd wait,
 *                                 without building or hashing that tuple:
 *                                 a table indexed by fd remembers each
 *                                 (fd, event)'s number after its first
 *                                 lookup.  The tuple-keyed lookup was most
 *                                 of resume()'s cost (~370 of ~540
 *                                 instructions under callgrind).
 *
 * Both are bound (like record) to a resume_state in a capsule: the ring,
 * a reference to the labels dict, the fd table.  The fd table relies on
 * the label table's one rule: a label's number never changes (labels are
 * only ever added). */

typedef struct {
    lk_trace *ring;
    PyObject *labels;        /* strong reference; a dict (subclass)        */
    uint32_t *fd_labels;     /* [fd * 4 + event]: label number, 0 unknown   */
    size_t    fd_slots;      /* entries in fd_labels                       */
} resume_state;

/* Beyond this fd, (fd, event) labels are looked up each time, uncached:
 * the table stays below 4 MiB whatever fd numbers a process reaches. */
#define FD_TABLE_MAX_FD (1 << 18)

static void resume_state_free(PyObject *capsule)
{
    resume_state *st = PyCapsule_GetPointer(capsule, NULL);
    if (st == NULL)
        return;
    Py_XDECREF(st->labels);
    PyMem_Free(st->fd_labels);
    PyMem_Free(st);
}

static inline resume_state *state_of(PyObject *self)
{
    /* self is always our capsule (PyCFunction_New below): no checks. */
    return (resume_state *)PyCapsule_GetPointer(self, NULL);
}

/* labels[key] as a C integer: -1 with an exception set on failure. */
static long long label_number(PyObject *labels, PyObject *key)
{
    long long number;
    PyObject *found = PyDict_GetItemWithError(labels, key);   /* borrowed */
    if (found != NULL)
        return PyLong_AsLongLong(found);
    if (PyErr_Occurred())   /* an unhashable label */
        return -1;
    found = PyObject_GetItem(labels, key);   /* __missing__ numbers it */
    if (found == NULL)
        return -1;
    number = PyLong_AsLongLong(found);
    Py_DECREF(found);
    return number;
}

static int check_why(PyObject *obj, uint32_t *why, const char *who)
{
    unsigned long value = PyLong_AsUnsignedLong(obj);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (value > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s(): why must fit in 32 bits", who);
        return -1;
    }
    *why = (uint32_t)value;
    return 0;
}

/* resume(g, why, label): see above. */
static PyObject *resume(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "resume() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    resume_state *st = state_of(self);
    uint32_t why;
    if (check_why(args[1], &why, "resume") < 0)
        return NULL;
    long long number = label_number(st->labels, args[2]);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    /* id(g): CPython's id() is the object's address. */
    write_resume(st->ring, (int64_t)(intptr_t)args[0], why, number);
    Py_RETURN_NONE;
}

/* The number of label (fd, event) (the objects the caller passed), from
 * the fd table when it has it. */
static long long fd_label_number(resume_state *st, PyObject *fd_obj, PyObject *event_obj)
{
    size_t slot = SIZE_MAX;
    long fd = PyLong_Check(fd_obj) ? PyLong_AsLong(fd_obj) : -1;
    long event = PyLong_Check(event_obj) ? PyLong_AsLong(event_obj) : -1;
    if (PyErr_Occurred())
        PyErr_Clear();   /* a huge int: not cached; the lookup below decides */
    else if (fd >= 0 && fd < FD_TABLE_MAX_FD && event >= 0 && event < 4)
        slot = (size_t)fd * 4 + (size_t)event;
    if (slot < st->fd_slots && st->fd_labels[slot] != 0)
        return st->fd_labels[slot];

    PyObject *key = PyTuple_Pack(2, fd_obj, event_obj);
    if (key == NULL)
        return -1;
    long long number = label_number(st->labels, key);
    Py_DECREF(key);
    if (number == -1 && PyErr_Occurred())
        return -1;
    if (slot != SIZE_MAX && number > 0 && number <= UINT32_MAX) {
        if (slot >= st->fd_slots) {   /* grow to a power of two past slot */
            size_t slots = st->fd_slots ? st->fd_slots : 256;
            while (slots <= slot)
                slots *= 2;
            uint32_t *table = PyMem_Realloc(st->fd_labels, slots * sizeof *table);
            if (table == NULL)
                return number;   /* uncached, still right */
            memset(table + st->fd_slots, 0, (slots - st->fd_slots) * sizeof *table);
            st->fd_labels = table;
            st->fd_slots = slots;
        }
        st->fd_labels[slot] = (uint32_t)number;
    }
    return number;
}

/* resume_fd(g, why, fd, event): resume(g, why, (fd, event)), see above. */
static PyObject *resume_fd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "resume_fd() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    resume_state *st = state_of(self);
    uint32_t why;
    if (check_why(args[1], &why, "resume_fd") < 0)
        return NULL;
    long long number = fd_label_number(st, args[2], args[3]);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    write_resume(st->ring, (int64_t)(intptr_t)args[0], why, number);
    Py_RETURN_NONE;
}

static PyMethodDef resume_def = {
    "resume", (PyCFunction)(void (*)(void))resume, METH_FASTCALL,
    "resume(g, why, label): write the resume record of greenlet g (a = id(g), "
    "arg = why, b = labels[label]) into the bound ring.",
};

static PyMethodDef resume_fd_def = {
    "resume_fd", (PyCFunction)(void (*)(void))resume_fd, METH_FASTCALL,
    "resume_fd(g, why, fd, event): resume(g, why, (fd, event)) without building "
    "the tuple once (fd, event)'s label number is known.",
};

/* resumers(address, labels) -> (resume, resume_fd), bound to the ring at
 * `address` and to the label table `labels` (kept alive by them). */
static PyObject *resumers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "resumers() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *address = args[0], *labels = args[1];
    if (!PyLong_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "resumers() takes the ring's address as an int");
        return NULL;
    }
    lk_trace *ring = (lk_trace *)PyLong_AsVoidPtr(address);
    if (ring == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "resumers() needs a ring, not NULL");
        return NULL;
    }
    if (!PyDict_Check(labels)) {
        PyErr_Format(PyExc_TypeError, "resumers(): labels must be a dict, not %.100s",
                     Py_TYPE(labels)->tp_name);
        return NULL;
    }
    PyObject *result = NULL, *capsule = NULL, *plain = NULL, *fd = NULL;
    resume_state *st = PyMem_Calloc(1, sizeof *st);
    if (st == NULL)
        return PyErr_NoMemory();
    st->ring = ring;
    Py_INCREF(labels);
    st->labels = labels;
    capsule = PyCapsule_New(st, NULL, resume_state_free);
    if (capsule == NULL) {
        Py_DECREF(labels);
        PyMem_Free(st);
        return NULL;
    }
    plain = PyCFunction_New(&resume_def, capsule);
    fd = PyCFunction_New(&resume_fd_def, capsule);
    if (plain != NULL && fd != NULL)
        result = PyTuple_Pack(2, plain, fd);
    Py_XDECREF(plain);
    Py_XDECREF(fd);
    Py_DECREF(capsule);
    return result;
}

/* ------------------------------------------------------------ frame locals
 *
 * A console reads the locals of every parked greenlet's frames (what it
 * waits on, the lost wake-up audit).  On 3.10-3.12 `frame.f_locals` makes
 * a dict of them and caches it on the frame for as long as the frame
 * lives: two frames a parked greenlet, two dicts the cyclic collector
 * tracks and keeps.  A first refresh at 10,000 greenlets left 20,000 of
 * them, collected young, then in generation 1 (~10 ms a pass in the
 * attached target), and enough to set off a full collection.  On 3.11 and
 * 3.12 these read the interpreter frame's slots instead, as CPython's own
 * frame_get_var (Objects/frameobject.c) does, and cache nothing.  (3.13
 * and later: f_locals is a proxy made per read, PEP 667, nothing cached;
 * 3.10: the dict stays -- labkit._frame_locals picks.) */
#if LK_SITES && PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#  define LK_FRAME_LOCALS 1

/* Slot i's value (borrowed, NULL if unbound); *skip: not a local to show. */
static PyObject *slot_value(_PyInterpreterFrame *f, PyCodeObject *co, int i, int *skip)
{
    _PyLocals_Kind kind = _PyLocals_GetKind(co->co_localspluskinds, i);
    *skip = 0;
#  ifdef CO_FAST_HIDDEN
    if (kind & CO_FAST_HIDDEN) {       /* 3.12: an inlined comprehension's */
        *skip = 1;
        return NULL;
    }
#  endif
    if ((kind & CO_FAST_FREE) && !(co->co_flags & CO_OPTIMIZED)) {
        *skip = 1;                     /* a class body's: not its own */
        return NULL;
    }
    PyObject *value = f->localsplus[i];
    if (value == NULL)
        return NULL;
    if (kind & CO_FAST_FREE)           /* set by COPY_FREE_VARS: always a cell */
        return PyCell_Check(value) ? PyCell_GET(value) : NULL;
    /* A cell variable: a cell once MAKE_CELL ran, at the function's start
     * (before that, an argument's initial value). */
    if ((kind & CO_FAST_CELL) && PyCell_Check(value))
        return PyCell_GET(value);
    return value;
}

static _PyInterpreterFrame *readable(PyObject *frame, const char *who)
{
    if (!PyFrame_Check(frame)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a frame, not %.100s", who,
                     Py_TYPE(frame)->tp_name);
        return NULL;
    }
    return ((PyFrameObject *)frame)->f_frame;
}

/* frame_local(frame, name) -> the value of `name` in frame, or None */
static PyObject *frame_local(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "frame_local() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    _PyInterpreterFrame *f = readable(args[0], "frame_local");
    if (f == NULL)
        return NULL;
    PyObject *name = args[1];
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "frame_local() takes a str name, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    if (_PyFrame_IsIncomplete(f))
        Py_RETURN_NONE;
    PyCodeObject *co = f->f_code;
    if (!(co->co_flags & CO_OPTIMIZED) && f->f_locals != NULL) {
        /* module or class code: its namespace is the real one */
        PyObject *value = PyObject_GetItem(f->f_locals, name);
        if (value == NULL) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return value;
    }
    PyObject *names = co->co_localsplusnames;
    for (int i = 0; i < co->co_nlocalsplus; i++) {
        PyObject *item = PyTuple_GET_ITEM(names, i);
        if (item != name) {
            int equal = PyUnicode_Compare(item, name);
            if (equal == -1 && PyErr_Occurred())
                return NULL;
            if (equal != 0)
                continue;
        }
        int skip;
        PyObject *value = slot_value(f, co, i, &skip);
        if (skip)
            continue;
        return Py_NewRef(value != NULL ? value : Py_None);
    }
    Py_RETURN_NONE;
}

/* frame_locals(frame) -> (dict, cached): the frame's bound locals.  If the
 * frame caches a dict already (someone read f_locals), that dict, brought
 * up to date, and True; else a new dict, not kept by the frame, and False. */
static PyObject *frame_locals(PyObject *module, PyObject *frame)
{
    (void)module;
    _PyInterpreterFrame *f = readable(frame, "frame_locals");
    if (f == NULL)
        return NULL;
    if (f->f_locals != NULL || _PyFrame_IsIncomplete(f)) {
        PyObject *cached = PyObject_GetAttrString(frame, "f_locals");
        return cached == NULL ? NULL : Py_BuildValue("(NO)", cached,
                                                     f->f_locals != NULL ? Py_True : Py_False);
    }
    PyCodeObject *co = f->f_code;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    PyObject *names = co->co_localsplusnames;
    for (int i = 0; i < co->co_nlocalsplus; i++) {
        int skip;
        PyObject *value = slot_value(f, co, i, &skip);
        if (skip || value == NULL)
            continue;
        if (PyDict_SetItem(out, PyTuple_GET_ITEM(names, i), value) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return Py_BuildValue("(NO)", out, Py_False);
}
#endif

static PyMethodDef module_functions[] = {
    {"writer", writer, METH_O,
     "writer(address) -> record: a function that writes trace records into the "
     "lk_trace ring at address (an int, from ffi.cast('uintptr_t', ring))."},
    {"resumers", (PyCFunction)(void (*)(void))resumers, METH_FASTCALL,
     "resumers(address, labels) -> (resume, resume_fd): resume(g, why, label) writes "
     "the resume record (a = id(g), arg = why, b = labels[label]) into the ring at "
     "address; resume_fd(g, why, fd, event) the same for label (fd, event)."},
    {"sites", (PyCFunction)(void (*)(void))sites, METH_FASTCALL,
     "sites(address, seq) -> (seq, gid, ((code, lasti, frame_key), ...)) or None: the "
     "resume site of resume record `seq` (the newest one, or the one of the last "
     "stall's greenlet), innermost frame first; None if the ring kept neither."},
    {"frame_key", frame_key, METH_O,
     "frame_key(frame) -> int: the key a resume site's level has when it is this "
     "live frame (its interpreter frame's address)."},
    {"configure_sites", (PyCFunction)(void (*)(void))configure_sites, METH_FASTCALL,
     "configure_sites(address, prefixes): files starting with one of these str are "
     "not user code (a resume site ends at the first frame of user code)."},
#ifdef LK_FRAME_LOCALS
    {"frame_local", (PyCFunction)(void (*)(void))frame_local, METH_FASTCALL,
     "frame_local(frame, name) -> the value of local `name` in frame, or None if it is "
     "unbound or not one of its locals; reads the frame's slots and leaves no f_locals "
     "dict on it (3.11-3.12 only)."},
    {"frame_locals", frame_locals, METH_O,
     "frame_locals(frame) -> (dict, cached): the frame's bound locals; the dict the frame "
     "caches if it has one (brought up to date, cached True), else a new one it does not "
     "keep (cached False) (3.11-3.12 only)."},
#endif
    {"release_sites", release_sites, METH_O,
     "release_sites(address): drop the references the ring's resume sites hold "
     "(call it before lk_trace_free)."},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase init, so the module can say what it needs of the interpreter.
 * Py_mod_gil: record() writes the ring with plain loads and stores and
 * relies on the GIL to keep two writers apart, so a free-threaded CPython
 * must keep its GIL on for us (labkit refuses to import there anyway).
 * Py_mod_multiple_interpreters: the module keeps no state of its own, so
 * several interpreters may load it -- but only interpreters that share one
 * GIL, because that GIL is what serializes the writers of a ring.  (labkit
 * as a whole cannot load in an own-GIL subinterpreter today: greenlet
 * refuses.)  The #ifdefs keep this compiling on 3.10-3.11, which have
 * neither slot. */
static PyModuleDef_Slot module_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "labkit._lk_trace_py",
    .m_doc = "Write labkit trace records with the GIL held (see loop_c/lk_trace_py.c).",
    .m_size = 0,
    .m_methods = module_functions,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__lk_trace_py(void)
{
    return PyModuleDef_Init(&module_def);
}
