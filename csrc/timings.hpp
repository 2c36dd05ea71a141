// The loop's clock readings for an attached Profiler (ember/engine/profile.py), handed to it
// when run() returns. Only allocated when a profiler is attached.
#pragma once

#include "pybind11.hpp"

#include "config.hpp"

#include <map>
#include <utility>
#include <vector>

namespace ember {

// Seconds on the clock of time.perf_counter (CLOCK_MONOTONIC on Linux).
double now_seconds();

class Timings {
public:
    struct Total {
        double seconds = 0.0;
        long long calls = 0;
        void add(double elapsed) {
            seconds += elapsed;
            ++calls;
        }
    };

    Total data;
    Total step;
    Total events[EVENT_COUNT];

    void add_handler(EventId id, PyObject* handler, double elapsed);

    // Calls profiler.add(kind, name, seconds, calls) for everything timed.
    void flush(py::handle profiler) const;

private:
    struct HandlerTotal {
        EventId event;
        py::object handler;  // held, so its address keys the map safely
        Total total;
    };
    std::vector<HandlerTotal> handlers_;
    std::map<std::pair<int, PyObject*>, size_t> index_;
};

}  // namespace ember
