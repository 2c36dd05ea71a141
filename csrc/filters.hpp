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

    // Mutable only for the memo below, which never changes the answer.
    bool accepts(long long counter) const;

private:
    bool evaluate(long long counter) const;

    // Counters only grow during a run, so after a rejection every counter up to the next hit
    // is rejected without the division (a modulo by a runtime value costs ~40 cycles, and an
    // every=100 handler is asked 99 times for each time it runs).
    mutable long long rejected_from_ = 1;
    mutable long long next_hit_ = 0;
};

}  // namespace ember
