/* The framed-payload splitter's fast path in C: `split(frame_type, payload, max_message)`.
 *
 * A framed payload is a run of messages, each a 14-byte header and a body:
 *
 *     \r\n  J|P  NNNNN  LLLLLL  body      (message number, body length: zero-padded decimals)
 *
 * `split` walks the headers from the start and returns `(frames, stop)`: the well-formed
 * frames, in order, as `frame_type` instances (a tuple subclass of three: kind "J" or "P", the
 * number as int, the body as bytes), and the offset where it stopped. `stop` is the payload's
 * length when every byte was a frame; otherwise at `stop` there is something that is not a whole
 * frame of at most `max_message` bytes (trailing white space, a bad or short header, an
 * oversized or truncated body), and bridge.mlink.framing decides what that is and names it, as
 * its Python splitter does. So errors are worded in one place, and nothing before them is lost.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define HEADER_LEN 14

static PyObject *KIND_J; /* "J" */
static PyObject *KIND_P; /* "P" */

/* The value of `n` ASCII digits at `p`, or -1 if one of them is not a digit. */
static long digits(const unsigned char *p, int n) {
    long value = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        value = value * 10 + (p[i] - '0');
    }
    return value;
}

/* One frame_type instance (kind, number, body), as tuple.__new__ makes a subtype's. */
static PyObject *frame(PyTypeObject *type, PyObject *kind, long number, const char *body,
                       Py_ssize_t size) {
    PyObject *num = PyLong_FromLong(number);
    if (num == NULL) {
        return NULL;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(body, size);
    if (bytes == NULL) {
        Py_DECREF(num);
        return NULL;
    }
    PyObject *out = type->tp_alloc(type, 3);
    if (out == NULL) {
        Py_DECREF(num);
        Py_DECREF(bytes);
        return NULL;
    }
    Py_INCREF(kind);
    PyTuple_SET_ITEM(out, 0, kind);
    PyTuple_SET_ITEM(out, 1, num);
    PyTuple_SET_ITEM(out, 2, bytes);
    return out;
}

static PyObject *split(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "split(frame_type, payload, max_message)");
        return NULL;
    }
    PyObject *type_obj = args[0];
    if (!PyType_Check(type_obj) || !PyType_IsSubtype((PyTypeObject *)type_obj, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "split: frame_type must be a tuple subclass");
        return NULL;
    }
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split: payload must be bytes");
        return NULL;
    }
    Py_ssize_t max_message = PyLong_AsSsize_t(args[2]);
    if (max_message == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)type_obj;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[1]);
    PyObject *frames = PyList_New(0);
    if (frames == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    while (end - pos >= HEADER_LEN) {
        const unsigned char *h = data + pos;
        if (h[0] != '\r' || h[1] != '\n' || (h[2] != 'J' && h[2] != 'P')) {
            break;
        }
        long number = digits(h + 3, 5);
        long size = digits(h + 8, 6);
        if (number < 0 || size < 0 || size > max_message || size > end - pos - HEADER_LEN) {
            break;
        }
        PyObject *item = frame(type, h[2] == 'J' ? KIND_J : KIND_P, number,
                               (const char *)h + HEADER_LEN, size);
        if (item == NULL || PyList_Append(frames, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(item);
        pos += HEADER_LEN + size;
    }
    PyObject *stop = PyLong_FromSsize_t(pos);
    if (stop == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, frames, stop);
    Py_DECREF(frames);
    Py_DECREF(stop);
    return out;
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "split(frame_type, payload, max_message) -> (frames, stop): the well-formed frames from "
     "the start, and the offset where something else begins (len(payload) if nothing does)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bridge.mlink._framing_native",
    .m_doc = "The framed-payload splitter's fast path (see bridge.mlink.framing).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__framing_native(void) {
    KIND_J = PyUnicode_InternFromString("J");
    KIND_P = PyUnicode_InternFromString("P");
    if (KIND_J == NULL || KIND_P == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
