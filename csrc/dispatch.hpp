// Calls the handlers of a built-in event, reading the engine's live registry.
#pragma once

#include "pybind11.hpp"

#include "config.hpp"
#include "filters.hpp"
#include "timings.hpp"

#include <optional>
#include <vector>

namespace ember {

// TypeError for an engine.state the loop cannot read at its slots.
[[noreturn]] void raise_foreign_state(PyObject* state);

// One run's view of an engine's handlers. The registry's lists are looked up again whenever
// the registry's version moves (a key bound, rebound or removed); each list is walked live, by
// index, re-reading its length after every call, as Python's list iterator does, so handlers
// appended during a firing run in the same pass. Decoded entries are cached by the identity of
// their (handler, args, kwargs) tuple, which the cache keeps alive. An event whose handlers
// all have count filters on one counter remembers the span of counters in which none of them
// fires, so that most firings of an `every=100` handler cost a compare, not a walk.
//
// Only what add_event_handler stores is decoded here: exact lists of exact (handler, tuple,
// dict) tuples. Anything else a program put in the registry (another sequence, a malformed
// entry, a FilteredHandler whose fields were replaced) goes to ember.engine._registry's
// call_handlers, which the Python loop and Engine._fire_event use: the same call, the same
// error.
class Dispatcher {
public:
    // `iteration`: what the loop last wrote to state.iteration, for count filters to read.
    // `state_guard`: the run's check that engine.state may be read at its slots.
    Dispatcher(PyObject* engine, const WrittenInt& iteration, LayoutGuard& state_guard)
        : engine_(engine),
          iteration_(iteration),
          state_guard_(state_guard),
          registry_guard_(configured().registry_layout),
          sink_guard_(configured().sink_layout) {}

    // Time each handler call into `timings` (null: no clock reads).
    void time_handlers(Timings* timings) { timings_ = timings; }

    // `event_kwargs` (iter_counter) may be null. False when the event had no handler.
    // Inline, with the checks it calls: the loop fires four events an iteration, most of them
    // without a handler or with filters that say no.
    bool fire(EventId id, PyObject* event_kwargs = nullptr) {
        PyObject* list = handlers(id);
        if (list == nullptr) return false;
        if (!is_quiet(id, list)) walk(id, list, event_kwargs);
        return true;
    }

private:
    // sink: an unfiltered OutputSink (ember/engine/sink.py), run here when its fields and the
    // state hold what it expects, else called as a plain handler.
    enum class Kind { plain, count, callable, python, sink };

    struct Entry {
        py::object item;
        Kind kind = Kind::plain;
        py::object callable;
        py::object engine_ref;  // a weakref to pass the engine first, or None
        py::object args;        // tuple, after the engine reference
        py::object kwargs;      // the stored dict itself, read at each call
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
    [[gnu::always_inline]] PyObject* handlers(EventId id) {
        const Config& c = configured();
        PyObject* registry = c.engine.registry.get(engine_);
        // Its version is read at a slot offset: only from a HandlerRegistry. The one held since
        // the last refresh needs only the class compare.
        if (__builtin_expect(
                registry != registry_.ptr() || !registry_guard_.admitted_last(registry), 0) &&
            !registry_guard_.admits(registry))
            raise_foreign_registry(registry);
        PyObject* version = c.registry_version.get(registry);
        if (registry != registry_.ptr() || version != version_.ptr()) refresh(registry, version);
        PyObject* list = lists_[id].ptr();
        if (list == nullptr) return nullptr;
        if (__builtin_expect(foreign_[id], 0)) return truthy_foreign(list) ? list : nullptr;
        return PySequence_Fast_GET_SIZE(list) == 0 ? nullptr : list;
    }

    [[gnu::always_inline]] bool is_quiet(EventId id, PyObject* list) {
        const QuietSpan& span = quiet_[id];
        // The list may have been edited in place, which does not move the registry's version.
        // Without a span, size is 0 and the list, which has handlers, fails here; with one, the
        // list is an exact list (measure_quiet_span() makes none for anything else).
        if (span.size == 0 || Py_SIZE(list) != span.size) return false;
        const Entry* entries = entries_[id].data();
        for (Py_ssize_t i = 0; i < span.size; ++i) {
            if (PyList_GET_ITEM(list, i) != entries[i].item.ptr()) return false;
        }
        long long counter = 0;
        return peek_counter(span.counter, counter) && counter >= span.from && counter < span.until;
    }

    // The value of `counter` (iteration or epoch) when engine.state is a State holding an int
    // there; false where only Python can tell (and raise).
    [[gnu::always_inline]] bool peek_counter(Counter counter, long long& value) {
        const Config& c = configured();
        PyObject* state = c.engine.state.peek(engine_);
        // The class compare only: Run::state() notices a class changed to shadow a field.
        if (state == nullptr || !state_guard_.admitted_last(state)) return false;
        // Not null: before the loop's first write, a deleted slot would match.
        if (counter == Counter::iteration && iteration_.object &&
            c.state.iteration.peek(state) == iteration_.object.ptr()) {
            value = iteration_.value;  // what the loop wrote: no conversion
            return true;
        }
        return peek_any_counter(state, counter, value);
    }

    // Out of line: an int the loop did not write (an epoch, or one a handler assigned).
    bool peek_any_counter(PyObject* state, Counter counter, long long& value) const;

    [[noreturn]] void raise_foreign_registry(PyObject* registry) const;
    bool truthy_foreign(PyObject* handlers) const;
    void walk(EventId id, PyObject* list, PyObject* event_kwargs);
    void measure_quiet_span(EventId id, PyObject* list);
    void refresh(PyObject* registry, PyObject* version);
    Entry decode(PyObject* item) const;
    void decode_filtered(Entry& entry, PyObject* wrapper) const;
    void call(const Entry& entry, PyObject* event_kwargs);
    bool ran_sink(const Entry& entry, PyObject* event_kwargs);
    void call_through_python(PyObject* handlers, PyObject* event_kwargs) const;
    bool python_filter_accepts(const Entry& entry) const;

    PyObject* engine_;
    const WrittenInt& iteration_;
    LayoutGuard& state_guard_;
    LayoutGuard registry_guard_;
    LayoutGuard sink_guard_;
    Timings* timings_ = nullptr;
    py::object registry_;
    py::object version_;  // held, so an unchanged version is the same object
    py::object lists_[EVENT_COUNT];
    bool foreign_[EVENT_COUNT] = {};  // lists_[id] is not an exact list or tuple
    std::vector<Entry> entries_[EVENT_COUNT];
    QuietSpan quiet_[EVENT_COUNT];
};

}  // namespace ember
