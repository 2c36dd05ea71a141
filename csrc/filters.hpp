// Event filters on integer counters (every / once / before / after), evaluated without Python.
#pragma once

#include "pybind11.hpp"

#include <vector>

namespace ember {

struct CountFilter {
    long long every = 1;
    bool has_after = false;
    long long after = 0;
    bool has_before = false;
    long long before = 0;
    long long grid_origin = 0;
    std::vector<long long> once;  // sorted; empty: not a once-filter

    // Reads the fields of an ember.engine.events.CountFilter.
    static CountFilter from_python(py::handle filter);

    bool accepts(long long counter) const;
};

}  // namespace ember
