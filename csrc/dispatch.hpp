// Calls the handlers of a built-in event, reading the engine's live registry.
#pragma once

#include "pybind11.hpp"

#include "config.hpp"
#include "filters.hpp"
#include "timings.hpp"

#include <vector>

namespace ember {

// One run's view of an engine's handlers. The registry's lists are looked up again whenever
// the registry's version moves (a key bound, rebound or removed); each list is walked live, by
// index, re-reading its length after every call, as Python's list iterator does, so handlers
// appended during a firing run in the same pass. Decoded entries are cached by the identity of
// their (handler, args, kwargs) tuple, which the cache keeps alive.
class Dispatcher {
public:
    // `iteration`: what the loop last wrote to state.iteration, for count filters to read.
    Dispatcher(PyObject* engine, const WrittenInt& iteration)
        : engine_(engine), iteration_(iteration) {}

    // Time each handler call into `timings` (null: no clock reads).
    void time_handlers(Timings* timings) { timings_ = timings; }

    // `event_arg` (the exception) and `event_kwargs` (iter_counter) may be null. False when
    // the event had no handler.
    bool fire(EventId id, PyObject* event_arg = nullptr, PyObject* event_kwargs = nullptr);

private:
    enum class FilterKind { none, count, callable };

    struct Entry {
        py::object item;
        py::object callable;
        py::object engine_ref;  // a weakref to pass the engine first, or None
        py::object args;        // tuple, after the engine reference
        py::object kwargs;      // the stored mapping itself, read at each call
        FilterKind filter_kind = FilterKind::none;
        Counter counter = Counter::none;
        CountFilter count;
        py::object filter;
        py::object filter_engine_ref;
    };

    PyObject* handlers(EventId id);
    void refresh(PyObject* registry, PyObject* version);
    Entry decode(PyObject* item, EventId id) const;
    void call(const Entry& entry, PyObject* event_arg, PyObject* event_kwargs);
    long long counter_value(Counter counter);

    PyObject* engine_;
    const WrittenInt& iteration_;
    Timings* timings_ = nullptr;
    py::object registry_;
    py::object version_;  // held, so an unchanged version is the same object
    py::object lists_[EVENT_COUNT];
    std::vector<Entry> entries_[EVENT_COUNT];
};

}  // namespace ember
