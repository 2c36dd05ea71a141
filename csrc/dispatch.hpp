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
// their (handler, args, kwargs) tuple, which the cache keeps alive. An event whose handlers
// all have count filters on one counter remembers the span of counters in which none of them
// fires, so that most firings of an `every=100` handler cost a compare, not a walk.
class Dispatcher {
public:
    // `iteration`: what the loop last wrote to state.iteration, for count filters to read.
    Dispatcher(PyObject* engine, const WrittenInt& iteration)
        : engine_(engine), iteration_(iteration) {}

    // Time each handler call into `timings` (null: no clock reads).
    void time_handlers(Timings* timings) { timings_ = timings; }

    // `event_arg` (the exception) and `event_kwargs` (iter_counter) may be null. False when
    // the event had no handler.
    // Inline, with the checks it calls: the loop fires four events an iteration, most of them
    // without a handler or with filters that say no.
    bool fire(EventId id, PyObject* event_arg = nullptr, PyObject* event_kwargs = nullptr) {
        PyObject* list = handlers(id);
        if (list == nullptr) return false;
        if (!is_quiet(id, list)) walk(id, list, event_arg, event_kwargs);
        return true;
    }

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

    // Counters in [from, until) fire none of the `size` cached entries, while the list still
    // holds those entries.
    struct QuietSpan {
        Counter counter = Counter::none;
        long long from = 0;
        long long until = 0;
        Py_ssize_t size = 0;  // 0: no span known
    };

    // The event's handler list, null when it has none.
    PyObject* handlers(EventId id) {
        const Config& c = configured();
        PyObject* registry = c.engine.registry.get(engine_);
        PyObject* version = c.registry_version.get(registry);
        if (registry != registry_.ptr() || version != version_.ptr()) refresh(registry, version);
        PyObject* list = lists_[id].ptr();
        if (list == nullptr || PySequence_Fast_GET_SIZE(list) == 0) return nullptr;
        return list;
    }

    bool is_quiet(EventId id, PyObject* list) const {
        const QuietSpan& span = quiet_[id];
        // The list may have been edited in place, which does not move the registry's version.
        // Without a span, size is 0 and the list, which has handlers, fails here; with one, the
        // list is a list (measure_quiet_span() makes none for a tuple) and stays one.
        if (Py_SIZE(list) != span.size) return false;
        const Entry* entries = entries_[id].data();
        for (Py_ssize_t i = 0; i < span.size; ++i) {
            if (PyList_GET_ITEM(list, i) != entries[i].item.ptr()) return false;
        }
        long long counter = 0;
        return peek_counter(span.counter, counter) && counter >= span.from && counter < span.until;
    }

    // The value of `counter` (iteration or epoch) when it is an int in its slot; false where
    // only counter_value() can tell (and raise).
    bool peek_counter(Counter counter, long long& value) const {
        const Config& c = configured();
        PyObject* state = c.engine.state.peek(engine_);
        if (state == nullptr) return false;
        if (counter == Counter::iteration &&
            c.state.iteration.peek(state) == iteration_.object.ptr()) {
            value = iteration_.value;  // what the loop wrote: no conversion
            return true;
        }
        return peek_any_counter(state, counter, value);
    }

    // Out of line: an int the loop did not write (an epoch, or one a handler assigned).
    bool peek_any_counter(PyObject* state, Counter counter, long long& value) const;

    void walk(EventId id, PyObject* list, PyObject* event_arg, PyObject* event_kwargs);
    void measure_quiet_span(EventId id, PyObject* list);
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
    QuietSpan quiet_[EVENT_COUNT];
};

}  // namespace ember
