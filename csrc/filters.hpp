// Event filters on integer counters (every / once / before / after), evaluated without Python.
#pragma once

#include "pybind11.hpp"

#include <vector>

namespace ember {

struct CountFilter {
    long long every = 1;
    long long after = 0;
    long long before = -1;  // -1: no upper bound
    long long grid_origin = 0;
    std::vector<long long> once;  // sorted; empty: not a once-filter

    // Reads the fields of an ember.engine.events.CountFilter.
    static CountFilter from_python(py::handle filter);

    bool accepts(long long counter) const;
};

}  // namespace ember
