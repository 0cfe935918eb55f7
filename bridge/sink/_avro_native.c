/* The Avro encoder's fast path in C: `encode(program, value, prefix)`.
 *
 * `program` is a record program built by bridge/sink/avro.py (`_native_program`) from a writer
 * schema: a tuple of fields, each a tuple (name, default, kind, sub), where
 *
 *   name     the field name (str): the key looked up in the value dict;
 *   default  the encoded bytes of the field's default (bytes), or None when it has none;
 *   kind     one of the KIND_* numbers below;
 *   sub      RECORD: the nested record program; ARRAY and NULLABLE: the item or branch type as
 *            a tuple (kind, sub); DATETIME: the function that turns MLink's DateTime text into
 *            int ns (a long otherwise); otherwise None.
 *
 * It writes exactly the bytes of bridge.sink.avro's Python encoder, and so of
 * fastavro.schemaless_writer, for the values it takes: exact dicts, lists, str, int (not bool),
 * float, True/False and None. Anything else (a NaN, a bool or float in a long, a Mapping that is
 * not a dict, a missing required field, a long beyond 64 bits, a string that is not valid
 * UTF-8 ...) makes it return None: the caller then runs the Python encoder, which either writes
 * the value (a tuple for an array, say) or raises SchemaMismatch naming the field. Only
 * MemoryError, and what is not an Exception (KeyboardInterrupt) from a DateTime parser, raise
 * here. `check(program)` validates a program once, when it is built: `encode` then trusts it.
 *
 * Programs built from a record plan (`_wire_program`) read the MLink wire body itself: fields
 * under their wire names, DateTime text parsed on the way. They stand for the plan's `apply`
 * followed by the encoder, for bodies whose every field the plan knows.
 *
 * A field that is omitted or None takes its default, as in the Python encoder; None in a
 * nullable field is the null branch.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { KIND_DOUBLE = 0, KIND_LONG, KIND_STRING, KIND_BOOLEAN, KIND_RECORD, KIND_ARRAY,
       KIND_NULLABLE, KIND_DATETIME };

/* Outcome of encoding one value. */
enum { OK = 0, FALLBACK = 1, ERROR = -1 };

#define STACK_BYTES 2048

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char stack[STACK_BYTES];
} Buffer;

static int grow(Buffer *b, Py_ssize_t need) {
    if (need > PY_SSIZE_T_MAX / 4 - b->len) {
        PyErr_NoMemory();
        return ERROR;
    }
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + need) {
        cap *= 2;
    }
    char *data;
    if (b->data == b->stack) {
        data = PyMem_Malloc(cap);
        if (data != NULL) {
            memcpy(data, b->stack, b->len);
        }
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return ERROR;
    }
    b->data = data;
    b->cap = cap;
    return OK;
}

static inline int reserve(Buffer *b, Py_ssize_t need) {
    return b->len + need <= b->cap ? OK : grow(b, need);
}

static inline int write_bytes(Buffer *b, const char *data, Py_ssize_t n) {
    if (reserve(b, n) != OK) {
        return ERROR;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return OK;
}

/* Avro long: zig-zag, then base-128 varint, least significant group first. */
static inline int write_long(Buffer *b, int64_t n) {
    if (reserve(b, 10) != OK) {
        return ERROR;
    }
    uint64_t z = ((uint64_t)n << 1) ^ ((uint64_t)0 - ((uint64_t)n >> 63)); /* no signed shift */
    unsigned char *out = (unsigned char *)b->data + b->len;
    Py_ssize_t i = 0;
    while (z > 0x7F) {
        out[i++] = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    out[i++] = (unsigned char)z;
    b->len += i;
    return OK;
}

static int encode_value(Buffer *b, long kind, PyObject *sub, PyObject *value);

static int encode_double(Buffer *b, PyObject *value) {
    double d;
    if (PyFloat_CheckExact(value)) {
        d = PyFloat_AS_DOUBLE(value);
    } else if (PyLong_CheckExact(value)) {
        d = PyLong_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear(); /* too large for a double: the Python encoder says so */
            return FALLBACK;
        }
    } else {
        return FALLBACK;
    }
    if (!isfinite(d)) {
        return FALLBACK; /* refused, by name, by the Python encoder */
    }
    if (reserve(b, 8) != OK) {
        return ERROR;
    }
    if (PyFloat_Pack8(d, b->data + b->len, 1) < 0) {
        return ERROR;
    }
    b->len += 8;
    return OK;
}

static int encode_long(Buffer *b, PyObject *value) {
    if (!PyLong_CheckExact(value)) {
        return FALLBACK; /* bool, float, str ...: refused or converted in Python */
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        return FALLBACK;
    }
    if (n == -1 && PyErr_Occurred()) {
        return ERROR;
    }
    return write_long(b, (int64_t)n);
}

/* A long, or DateTime text turned into one by `parse` (whose errors mean: use Python). */
static int encode_datetime(Buffer *b, PyObject *parse, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        return encode_long(b, value);
    }
    PyObject *ns = PyObject_CallOneArg(parse, value);
    if (ns == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return ERROR; /* KeyboardInterrupt and the like are not ours to swallow */
        }
        PyErr_Clear();
        return FALLBACK;
    }
    int outcome = encode_long(b, ns);
    Py_DECREF(ns);
    return outcome;
}

static int encode_string(Buffer *b, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        return FALLBACK;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(value, &size);
    if (data == NULL) {
        PyErr_Clear(); /* lone surrogates: not UTF-8 */
        return FALLBACK;
    }
    if (write_long(b, size) != OK) {
        return ERROR;
    }
    return write_bytes(b, data, size);
}

static int encode_record(Buffer *b, PyObject *program, PyObject *value) {
    if (!PyDict_CheckExact(value)) {
        return FALLBACK;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(program);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PyTuple_GET_ITEM(program, i);
        PyObject *name = PyTuple_GET_ITEM(field, 0);
        PyObject *fallback = PyTuple_GET_ITEM(field, 1);
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 2));
        PyObject *sub = PyTuple_GET_ITEM(field, 3);
        PyObject *item = PyDict_GetItemWithError(value, name);
        if (item == NULL && PyErr_Occurred()) {
            return ERROR;
        }
        if (item == NULL || (item == Py_None && kind != KIND_NULLABLE)) {
            if (fallback == Py_None) {
                return FALLBACK; /* required, or a default only Python writes */
            }
            if (write_bytes(b, PyBytes_AS_STRING(fallback), PyBytes_GET_SIZE(fallback)) != OK) {
                return ERROR;
            }
            continue;
        }
        /* Held while encoded: nothing here runs Python code, but a dict is not ours. */
        Py_INCREF(item);
        int outcome = encode_value(b, kind, sub, item);
        Py_DECREF(item);
        if (outcome != OK) {
            return outcome;
        }
    }
    return OK;
}

static int encode_array(Buffer *b, PyObject *item_type, PyObject *value) {
    if (!PyList_CheckExact(value)) {
        return FALLBACK;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(item_type, 0));
    PyObject *sub = PyTuple_GET_ITEM(item_type, 1);
    Py_ssize_t count = PyList_GET_SIZE(value);
    if (count > 0) {
        /* One block with all the items, then the zero count that ends the array. */
        if (write_long(b, count) != OK) {
            return ERROR;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            if (i >= PyList_GET_SIZE(value)) {
                return FALLBACK; /* the list changed under us */
            }
            PyObject *item = PyList_GET_ITEM(value, i);
            Py_INCREF(item);
            int outcome = encode_value(b, kind, sub, item);
            Py_DECREF(item);
            if (outcome != OK) {
                return outcome;
            }
        }
    }
    return write_bytes(b, "\0", 1);
}

static int encode_value(Buffer *b, long kind, PyObject *sub, PyObject *value) {
    switch (kind) {
    case KIND_DOUBLE:
        return encode_double(b, value);
    case KIND_LONG:
        return encode_long(b, value);
    case KIND_STRING:
        return encode_string(b, value);
    case KIND_BOOLEAN:
        if (value == Py_True || value == Py_False) {
            return write_bytes(b, value == Py_True ? "\1" : "\0", 1);
        }
        return FALLBACK;
    case KIND_RECORD:
        return encode_record(b, sub, value);
    case KIND_ARRAY:
        if (value == Py_None) {
            return write_bytes(b, "\0", 1); /* an empty array, as in Python */
        }
        return encode_array(b, sub, value);
    case KIND_DATETIME:
        return encode_datetime(b, sub, value);
    case KIND_NULLABLE:
        if (value == Py_None) {
            return write_bytes(b, "\0", 1);
        }
        if (write_bytes(b, "\2", 1) != OK) {
            return ERROR;
        }
        return encode_value(b, PyLong_AsLong(PyTuple_GET_ITEM(sub, 0)),
                            PyTuple_GET_ITEM(sub, 1), value);
    default:
        PyErr_Format(PyExc_ValueError, "bad encoder program: kind %ld", kind);
        return ERROR;
    }
}

static PyObject *encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyTuple_CheckExact(args[0]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "encode(program: tuple, value, prefix: bytes)");
        return NULL;
    }
    Buffer b;
    b.data = b.stack;
    b.len = 0;
    b.cap = STACK_BYTES;
    PyObject *result = NULL;
    int outcome = write_bytes(&b, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    if (outcome == OK) {
        outcome = encode_record(&b, args[0], args[1]);
    }
    if (outcome == OK) {
        result = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (outcome == FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    if (b.data != b.stack) {
        PyMem_Free(b.data);
    }
    return result;
}

/* --- program validation, once per program --------------------------------------------------- */

static int check_record(PyObject *program, int depth);

static int bad_program(const char *what) {
    PyErr_Format(PyExc_ValueError, "bad encoder program: %s", what);
    return ERROR;
}

static int check_type(PyObject *kind_obj, PyObject *sub, int depth) {
    if (!PyLong_CheckExact(kind_obj)) {
        return bad_program("a kind is not an int");
    }
    long kind = PyLong_AsLong(kind_obj);
    switch (kind) {
    case KIND_DOUBLE:
    case KIND_LONG:
    case KIND_STRING:
    case KIND_BOOLEAN:
        return sub == Py_None ? OK : bad_program("a primitive with a sub-program");
    case KIND_RECORD:
        return check_record(sub, depth + 1);
    case KIND_ARRAY:
    case KIND_NULLABLE:
        if (!PyTuple_CheckExact(sub) || PyTuple_GET_SIZE(sub) != 2) {
            return bad_program("an array or union without its (kind, sub) type");
        }
        return check_type(PyTuple_GET_ITEM(sub, 0), PyTuple_GET_ITEM(sub, 1), depth + 1);
    case KIND_DATETIME:
        return PyCallable_Check(sub) ? OK : bad_program("a DateTime without its parser");
    default:
        return bad_program("an unknown kind");
    }
}

static int check_record(PyObject *program, int depth) {
    if (depth > 32) {
        return bad_program("nested too deep");
    }
    if (!PyTuple_CheckExact(program)) {
        return bad_program("a record is not a tuple of fields");
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(program); i++) {
        PyObject *field = PyTuple_GET_ITEM(program, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 4) {
            return bad_program("a field is not a (name, default, kind, sub) tuple");
        }
        PyObject *fallback = PyTuple_GET_ITEM(field, 1);
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(field, 0))) {
            return bad_program("a field name is not a str");
        }
        if (fallback != Py_None && !PyBytes_CheckExact(fallback)) {
            return bad_program("a default is neither bytes nor None");
        }
        if (check_type(PyTuple_GET_ITEM(field, 2), PyTuple_GET_ITEM(field, 3), depth) != OK) {
            return ERROR;
        }
    }
    return OK;
}

static PyObject *check(PyObject *module, PyObject *program) {
    (void)module;
    if (check_record(program, 0) != OK) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"check", (PyCFunction)check, METH_O,
     "check(program): raise ValueError unless `program` is one `encode` can walk"},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(program, value, prefix) -> prefix + Avro bytes, or None: use the Python encoder"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bridge.sink._avro_native",
    .m_doc = "The Avro encoder's fast path (see bridge.sink.avro).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__avro_native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "KIND_DOUBLE", KIND_DOUBLE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_LONG", KIND_LONG) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STRING", KIND_STRING) < 0 ||
        PyModule_AddIntConstant(m, "KIND_BOOLEAN", KIND_BOOLEAN) < 0 ||
        PyModule_AddIntConstant(m, "KIND_RECORD", KIND_RECORD) < 0 ||
        PyModule_AddIntConstant(m, "KIND_ARRAY", KIND_ARRAY) < 0 ||
        PyModule_AddIntConstant(m, "KIND_NULLABLE", KIND_NULLABLE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_DATETIME", KIND_DATETIME) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
