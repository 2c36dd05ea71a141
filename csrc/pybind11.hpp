// First include of every translation unit: pybind11, the CPython headers it brings, and the
// small helpers the loop uses to touch Python objects without pybind11's casts.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/typing.h>

#include <structmember.h>

#include <limits>
#include <optional>

namespace py = pybind11;

namespace ember {

// Owned reference from a C API call that returns NULL with an exception set on failure.
inline py::object steal_or_throw(PyObject* result) {
    if (result == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(result);
}

// An exact int in long long's range: what the loop counts with in C++. Anything else a program
// stored (a float, a NumPy integer, an int beyond 64 bits) is left to Python's own operators,
// which the Python loop applies to whatever is there.
inline bool exact_int(PyObject* value, long long& result) {
    if (!PyLong_CheckExact(value)) return false;
    int overflow = 0;
    result = PyLong_AsLongLongAndOverflow(value, &overflow);
    return overflow == 0;
}

// Python's truth value of `value`.
inline bool truthy(PyObject* value) {
    if (value == Py_False || value == Py_None) return false;
    if (value == Py_True) return true;
    py::object held = py::reinterpret_borrow<py::object>(value);  // __bool__ may drop its owner's
    int result = PyObject_IsTrue(value);
    if (result < 0) throw py::error_already_set();
    return result != 0;
}

// Python's `a <op> b`, without the identity shortcut of PyObject_RichCompareBool (nan == nan
// is false in Python code).
inline bool python_compare(PyObject* a, PyObject* b, int op) {
    py::object held_a = py::reinterpret_borrow<py::object>(a);
    py::object held_b = py::reinterpret_borrow<py::object>(b);
    return truthy(steal_or_throw(PyObject_RichCompare(a, b, op)).ptr());
}

// The int object the loop last wrote to a counter slot, held so that finding the same object
// there again means the same value: no conversion needed (a handler may write another one).
struct WrittenInt {
    py::object object;
    long long value = 0;
};

// A __slots__ member of a Python class, read and written at its offset without an attribute
// lookup. Built from the member descriptor that the class or one of its bases defines, so it
// also works on subclass instances; used only on objects whose class a Layout admitted
// (config.hpp), since any other object's memory holds something else there.
class Slot {
public:
    Slot() = default;
    Slot(py::handle cls, const char* name) {
        py::object descriptor = py::getattr(cls, name);  // along the MRO
        if (Py_TYPE(descriptor.ptr()) != &PyMemberDescr_Type || !PyType_Check(cls.ptr()) ||
            !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(cls.ptr()),
                              PyDescr_TYPE(descriptor.ptr())))
            throw py::type_error(std::string(name) + " is not a __slots__ member");
        auto* member = reinterpret_cast<PyMemberDescrObject*>(descriptor.ptr())->d_member;
        offset_ = member->offset;
        name_ = name;
    }

    // Borrowed; raises AttributeError when the slot was never assigned.
    PyObject* get(PyObject* obj) const {
        PyObject* value = *address(obj);
        if (__builtin_expect(value == nullptr, 0)) raise_unassigned(obj);
        return value;
    }

    // Borrowed; null when the slot was never assigned.
    PyObject* peek(PyObject* obj) const { return *address(obj); }

    const char* name() const { return name_; }

    void set(PyObject* obj, PyObject* value) const {
        PyObject** where = address(obj);
        PyObject* old = *where;
        Py_INCREF(value);
        *where = value;
        Py_XDECREF(old);  // may run __del__ of the old value: after the store, as CPython does
    }

    void set_int(PyObject* obj, long long value, WrittenInt& written) const {
        written.object = steal_or_throw(PyLong_FromLongLong(value));
        written.value = value;
        set(obj, written.object.ptr());
    }

    void set_int(PyObject* obj, long long value) const {
        py::object boxed = steal_or_throw(PyLong_FromLongLong(value));
        set(obj, boxed.ptr());
    }

private:
    // Out of line, so that get() inlines into the loop's every read.
    [[noreturn, gnu::noinline, gnu::cold]] void raise_unassigned(PyObject* obj) const {
        PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                     Py_TYPE(obj)->tp_name, name_);
        throw py::error_already_set();
    }

    PyObject** address(PyObject* obj) const {
        return reinterpret_cast<PyObject**>(reinterpret_cast<char*>(obj) + offset_);
    }

    Py_ssize_t offset_ = 0;
    const char* name_ = "";
};

}  // namespace ember
