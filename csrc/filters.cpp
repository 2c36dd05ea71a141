#include "pybind11.hpp"

#include "filters.hpp"

#include <algorithm>

namespace ember {

CountFilter CountFilter::from_python(py::handle filter) {
    CountFilter result;
    py::object once = filter.attr("once");
    if (!once.is_none()) {
        for (py::handle value : once) result.once.push_back(value.cast<long long>());
        std::sort(result.once.begin(), result.once.end());
        return result;
    }
    result.every = filter.attr("every").cast<long long>();
    py::object after = filter.attr("after");
    result.has_after = !after.is_none();
    if (result.has_after) result.after = after.cast<long long>();
    py::object before = filter.attr("before");
    result.has_before = !before.is_none();
    if (result.has_before) result.before = before.cast<long long>();
    result.grid_origin = filter.attr("grid_origin").cast<long long>();
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
    long long candidate = counter;
    if (has_after && candidate <= after) {
        if (after == NEVER) return NEVER;
        candidate = after + 1;
    }
    // Python's modulo: the sign follows the divisor, so negative offsets still land on the grid.
    long long remainder = (candidate - grid_origin) % every;
    if (remainder < 0) remainder += every;
    if (remainder != 0 && __builtin_add_overflow(candidate, every - remainder, &candidate))
        return NEVER;
    if (has_before && candidate >= before) return NEVER;
    return candidate;
}

}  // namespace ember
