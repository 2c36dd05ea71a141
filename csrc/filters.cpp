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
    if (counter >= rejected_from_ && counter < next_hit_) return false;
    bool accepted = evaluate(counter);
    if (!accepted && once.empty() && every > 1) {
        long long remainder = (counter - grid_origin) % every;
        if (remainder < 0) remainder += every;
        rejected_from_ = counter;
        next_hit_ = counter + (every - remainder);  // the next counter on the grid
    }
    return accepted;
}

bool CountFilter::evaluate(long long counter) const {
    if (!once.empty()) return std::binary_search(once.begin(), once.end(), counter);
    if ((has_after && counter <= after) || (has_before && counter >= before)) return false;
    long long offset = counter - grid_origin;
    // Python's modulo: the sign follows the divisor, so negative offsets still land on the grid.
    long long remainder = offset % every;
    if (remainder < 0) remainder += every;
    return remainder == 0;
}

}  // namespace ember
