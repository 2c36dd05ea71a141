// Event filters on integer counters (every / once / before / after), evaluated without Python.
#pragma once

#include "pybind11.hpp"

#include <limits>
#include <optional>
#include <vector>

namespace ember {

struct CountFilter {
    // first_accepted_from() when no counter from there on is accepted.
    static constexpr long long NEVER = std::numeric_limits<long long>::max();

    long long every = 1;
    bool has_after = false;
    long long after = 0;
    bool has_before = false;
    long long before = 0;
    long long grid_origin = 0;
    std::vector<long long> once;  // sorted; empty: not a once-filter

    // Reads the fields of an ember.engine.events.CountFilter; nothing when a program set them
    // to values only Python can evaluate (every < 1, a str, an int beyond long long...), for
    // the caller to call the filter itself.
    static std::optional<CountFilter> from_python(py::handle filter);

    bool accepts(long long counter) const;

    // The smallest accepted counter at or after `counter`, or NEVER.
    long long first_accepted_from(long long counter) const;

private:
    // Counters only grow during a run, so one answer of first_accepted_from() serves every
    // counter up to the hit it names (a modulo by a runtime value costs ~40 cycles, and an
    // every=100 handler is asked 99 times for each time it runs). Mutable: a memo, never a
    // different answer.
    mutable long long memo_from_ = 1;
    mutable long long memo_hit_ = 0;
};

}  // namespace ember
