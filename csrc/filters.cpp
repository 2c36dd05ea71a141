#include "pybind11.hpp"

#include "filters.hpp"

#include <algorithm>

namespace ember {

namespace {

// An exact int in long long's range.
bool read_int(py::handle value, long long& result) {
    if (!PyLong_CheckExact(value.ptr())) return false;
    int overflow = 0;
    result = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    return overflow == 0 && !(result == -1 && PyErr_Occurred());
}

// An exact int or None.
bool read_optional_int(py::handle value, bool& present, long long& result) {
    present = !value.is_none();
    return !present || read_int(value, result);
}

py::object slot_value(py::handle filter, const char* name) {
    PyObject* value = PyObject_GetAttrString(filter.ptr(), name);
    if (value == nullptr) PyErr_Clear();  // deleted: Python's own call reports it
    return py::reinterpret_steal<py::object>(value);
}

}  // namespace

std::optional<CountFilter> CountFilter::from_python(py::handle filter) {
    CountFilter result;
    py::object once = slot_value(filter, "once");
    if (!once) return std::nullopt;
    if (!once.is_none()) {
        // An empty `once` never fires, which an empty vector here would not say.
        if (!PyTuple_CheckExact(once.ptr()) || PyTuple_GET_SIZE(once.ptr()) == 0)
            return std::nullopt;
        for (py::handle value : once) {
            long long number = 0;
            if (!read_int(value, number)) return std::nullopt;
            result.once.push_back(number);
        }
        std::sort(result.once.begin(), result.once.end());
        return result;
    }
    py::object every = slot_value(filter, "every");
    py::object after = slot_value(filter, "after");
    py::object before = slot_value(filter, "before");
    py::object grid_origin = slot_value(filter, "grid_origin");
    if (!every || !after || !before || !grid_origin) return std::nullopt;
    if (!read_int(every, result.every) || result.every < 1) return std::nullopt;
    if (!read_optional_int(after, result.has_after, result.after)) return std::nullopt;
    if (!read_optional_int(before, result.has_before, result.before)) return std::nullopt;
    if (!read_int(grid_origin, result.grid_origin)) return std::nullopt;
    return result;
}

bool CountFilter::accepts(long long counter) const {
    if (counter < memo_from_ || counter > memo_hit_) {
        memo_from_ = counter;
        memo_hit_ = first_accepted_from(counter);
    }
    return counter == memo_hit_;
}

long long CountFilter::first_accepted_from(long long counter) const {
    if (!once.empty()) {
        auto hit = std::lower_bound(once.begin(), once.end(), counter);
        return hit == once.end() ? NEVER : *hit;
    }
    // In 128 bits: a program may set every field anywhere in long long's range.
    __int128 candidate = counter;
    if (has_after && candidate <= after) candidate = static_cast<__int128>(after) + 1;
    // Python's modulo: the sign follows the divisor, so negative offsets still land on the grid.
    __int128 remainder = (candidate - grid_origin) % every;
    if (remainder < 0) remainder += every;
    if (remainder != 0) candidate += every - remainder;
    if (has_before && candidate >= before) return NEVER;
    if (candidate >= NEVER) return NEVER;
    return static_cast<long long>(candidate);
}
}  // namespace ember
