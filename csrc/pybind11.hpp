// First include of every translation unit: pybind11, the CPython headers it brings, and the
// small helpers the loop uses to touch Python objects without pybind11's casts.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/typing.h>

#include <structmember.h>

#include <cmath>

namespace py = pybind11;

namespace ember {

// Owned reference from a C API call that returns NULL with an exception set on failure.
inline py::object steal_or_throw(PyObject* result) {
    if (result == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(result);
}

// The int object the loop last wrote to a counter slot, held so that finding the same object
// there again means the same value: no conversion needed (a handler may write another one).
struct WrittenInt {
    py::object object;
    long long value = 0;
};

// A __slots__ member of a Python class, read and written at its offset without an attribute
// lookup. Built from the member descriptor that the class or one of its bases defines, so it
// also works on subclass instances.
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

    void set(PyObject* obj, PyObject* value) const {
        PyObject** where = address(obj);
        PyObject* old = *where;
        Py_INCREF(value);
        *where = value;
        Py_XDECREF(old);  // may run __del__ of the old value: after the store, as CPython does
    }

    long long get_int(PyObject* obj) const { return as_count(get(obj)); }

    // None maps to `none_value`.
    long long get_optional_int(PyObject* obj, long long none_value) const {
        PyObject* value = get(obj);
        if (value == Py_None) return none_value;
        return as_count(value);
    }

    long long get_int(PyObject* obj, const WrittenInt& written) const {
        PyObject* value = get(obj);
        return value == written.object.ptr() ? written.value : as_count(value);
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

    // An int, anything with __index__, or a float with an integral value (which the Python
    // loop, comparing numbers, would accept too).
    long long as_count(PyObject* value) const {
        if (PyLong_CheckExact(value)) return checked(PyLong_AsLongLong(value));
        if (PyFloat_Check(value)) {
            double number = PyFloat_AS_DOUBLE(value);
            if (std::isfinite(number) && std::fabs(number) < 9.0e18) {  // in long long's range
                auto whole = static_cast<long long>(number);
                if (static_cast<double>(whole) == number) return whole;
            }
            PyErr_Format(PyExc_TypeError, "'%s' should be a whole number, got %R", name_, value);
            throw py::error_already_set();
        }
        return checked(PyLong_AsLongLong(value));  // anything with __index__
    }

    static long long checked(long long result) {
        if (result == -1 && PyErr_Occurred()) throw py::error_already_set();
        return result;
    }

    PyObject** address(PyObject* obj) const {
        return reinterpret_cast<PyObject**>(reinterpret_cast<char*>(obj) + offset_);
    }

    Py_ssize_t offset_ = 0;
    const char* name_ = "";
};

}  // namespace ember
