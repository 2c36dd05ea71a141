#include "pybind11.hpp"

#include "dispatch.hpp"

#include <algorithm>
#include <string>

namespace ember {

namespace {

[[noreturn]] void engine_reference_lost() {
    PyErr_SetString(PyExc_RuntimeError,
                    "Engine reference not resolved. Cannot execute event handler.");
    throw py::error_already_set();
}

PyObject* live_engine(PyObject* weak) {
    PyObject* engine = PyWeakref_GetObject(weak);
    if (engine == nullptr) throw py::error_already_set();
    if (engine == Py_None) engine_reference_lost();
    return engine;
}

// The counter State.event_to_attr names for `event`, or none (also when looking it up fails:
// the entry is then called through Python, which reports it where the Python loop does).
Counter counter_of(PyObject* event) {
    PyObject* name = PyDict_GetItemWithError(configured().event_to_attr, event);
    if (name == nullptr) {
        PyErr_Clear();
        return Counter::none;
    }
    if (!PyUnicode_CheckExact(name)) return Counter::none;
    if (PyUnicode_CompareWithASCIIString(name, "iteration") == 0) return Counter::iteration;
    if (PyUnicode_CompareWithASCIIString(name, "epoch") == 0) return Counter::epoch;
    return Counter::none;
}

// An attribute from a FilteredHandler's __dict__, null when it is not there.
py::object field_of(PyObject* wrapper, const char* name) {
    PyObject* dict = PyObject_GenericGetDict(wrapper, nullptr);
    if (dict == nullptr) {
        PyErr_Clear();
        return py::object();
    }
    py::object owned_dict = py::reinterpret_steal<py::object>(dict);
    // Borrowed from the dict; no Python code runs before it is owned (the keys are str).
    return py::reinterpret_borrow<py::object>(PyDict_GetItemString(dict, name));
}

}  // namespace

void raise_foreign_state(PyObject* state) {
    PyErr_Format(PyExc_TypeError,
                 "engine.state should be an ember.engine.State whose class keeps the loop's "
                 "fields in their slots, got %.100s",
                 Py_TYPE(state)->tp_name);
    throw py::error_already_set();
}

void Dispatcher::raise_foreign_registry(PyObject* registry) const {
    PyErr_Format(PyExc_TypeError,
                 "engine._event_handlers should be a HandlerRegistry, got %.100s; assign a "
                 "mapping to engine._event_handlers to convert it",
                 Py_TYPE(registry)->tp_name);
    throw py::error_already_set();
}

bool Dispatcher::truthy_foreign(PyObject* handlers) const {
    int result = PyObject_IsTrue(handlers);
    if (result < 0) throw py::error_already_set();
    return result != 0;
}

void Dispatcher::refresh(PyObject* borrowed_registry, PyObject* borrowed_version) {
    const Config& c = configured();
    // Held: a key's __eq__ or __hash__ (the lookups below), or a __del__ of a list replaced,
    // may rebind engine._event_handlers or registry.version and free the ones borrowed.
    py::object registry = py::reinterpret_borrow<py::object>(borrowed_registry);
    py::object version = py::reinterpret_borrow<py::object>(borrowed_version);
    for (int id = 0; id < EVENT_COUNT; ++id) {
        PyObject* list = PyDict_GetItemWithError(registry.ptr(), c.events[id]);
        if (list == nullptr && PyErr_Occurred()) throw py::error_already_set();
        if (list != lists_[id].ptr()) {
            lists_[id] = py::reinterpret_borrow<py::object>(list);
            foreign_[id] = list != nullptr && !PyList_CheckExact(list) && !PyTuple_CheckExact(list);
            entries_[id].clear();
            quiet_[id] = QuietSpan{};
        }
    }
    registry_ = std::move(registry);
    version_ = std::move(version);
}

Dispatcher::Entry Dispatcher::decode(PyObject* item) const {
    const Config& c = configured();
    Entry entry;
    entry.item = py::reinterpret_borrow<py::object>(item);
    entry.kind = Kind::python;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) return entry;
    PyObject* handler = PyTuple_GET_ITEM(item, 0);
    PyObject* args = PyTuple_GET_ITEM(item, 1);
    PyObject* kwargs = PyTuple_GET_ITEM(item, 2);
    if (!PyTuple_CheckExact(args) || !PyDict_CheckExact(kwargs)) return entry;

    entry.kind = Kind::plain;
    entry.engine_ref = py::none();
    entry.args = py::reinterpret_borrow<py::object>(args);
    Py_ssize_t n_args = PyTuple_GET_SIZE(args);
    if (n_args > 0 && PyWeakref_CheckRef(PyTuple_GET_ITEM(args, 0))) {
        // A subclass of weakref.ref (WeakMethod) answers something else when called.
        if (!PyWeakref_CheckRefExact(PyTuple_GET_ITEM(args, 0))) {
            entry.kind = Kind::python;
            return entry;
        }
        entry.engine_ref = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(args, 0));
        entry.args = steal_or_throw(PyTuple_GetSlice(args, 1, n_args));
    }
    // Read at each call: it may be edited.
    entry.kwargs = py::reinterpret_borrow<py::object>(kwargs);
    entry.callable = py::reinterpret_borrow<py::object>(handler);
    if (Py_TYPE(handler) == c.filtered_handler_type) {
        decode_filtered(entry, handler);
    } else if (!entry.engine_ref.is_none() && PyTuple_GET_SIZE(entry.args.ptr()) == 0 &&
               c.sink_layout.admits_class(Py_TYPE(handler))) {
        entry.kind = Kind::sink;
    }
    return entry;
}

// A filtered handler whose event counts iterations or epochs: its filter is evaluated here and
// the inner handler called directly. Otherwise (another event, or fields a program replaced)
// the wrapper is called, which reads State.event_to_attr itself and raises where ignite does.
void Dispatcher::decode_filtered(Entry& entry, PyObject* wrapper) const {
    const Config& c = configured();
    py::object inner = field_of(wrapper, "handler");
    py::object event = field_of(wrapper, "event");
    py::object filter = field_of(wrapper, "event_filter");
    py::object engine_ref = field_of(wrapper, "engine_ref");
    if (!inner || !event || !filter || !engine_ref || !PyWeakref_CheckRefExact(engine_ref.ptr()))
        return;
    Counter counter = counter_of(event.ptr());
    if (counter == Counter::none) return;
    std::optional<CountFilter> count;
    // The counter read here is this engine's: a wrapper of another engine (a copied registry)
    // reads its own engine's counter, in Python.
    if (Py_TYPE(filter.ptr()) == c.count_filter_type &&
        PyWeakref_GetObject(engine_ref.ptr()) == engine_)
        count = CountFilter::from_python(filter);
    entry.kind = count ? Kind::count : Kind::callable;
    if (count) entry.count = *count;
    entry.filter = filter;
    entry.filter_engine_ref = engine_ref;
    entry.counter = counter;
    entry.callable = inner;
}

// A filter evaluated by Python: an event_filter= callable, or a CountFilter when the counter
// is not an int the C++ filter can take. It sees what FilteredHandler.__call__ passes it: the
// engine and the counter as they are.
bool Dispatcher::python_filter_accepts(const Entry& entry) const {
    const Config& c = configured();
    PyObject* engine = live_engine(entry.filter_engine_ref.ptr());
    py::object held_engine = py::reinterpret_borrow<py::object>(engine);
    py::object state = steal_or_throw(PyObject_GetAttr(engine, c.names.state));
    PyObject* name = entry.counter == Counter::iteration ? c.names.iteration : c.names.epoch;
    py::object counter = steal_or_throw(PyObject_GetAttr(state.ptr(), name));
    PyObject* args[] = {engine, counter.ptr()};
    py::object verdict = steal_or_throw(PyObject_Vectorcall(entry.filter.ptr(), args, 2, nullptr));
    return truthy(verdict.ptr());
}

void Dispatcher::call_through_python(PyObject* handlers, PyObject* event_kwargs) const {
    py::object kwargs = event_kwargs ? py::reinterpret_borrow<py::object>(event_kwargs)
                                     : steal_or_throw(PyDict_New());
    py::object no_args = steal_or_throw(PyTuple_New(0));
    PyObject* argv[] = {handlers, no_args.ptr(), kwargs.ptr()};
    steal_or_throw(PyObject_Vectorcall(configured().support.call_handlers, argv, 3, nullptr));
}

namespace {

// OutputSink.accepts(output) for fields already checked: accepted_type is None or a class, and
// accepted_attributes an exact tuple of exact (str, allowed) tuples.
bool sink_accepts(PyObject* output, PyObject* accepted_type, PyObject* accepted_attributes) {
    if (accepted_type == Py_None) return true;
    if (reinterpret_cast<PyObject*>(Py_TYPE(output)) != accepted_type) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(accepted_attributes); ++i) {
        PyObject* pair = PyTuple_GET_ITEM(accepted_attributes, i);
        py::object value = steal_or_throw(PyObject_GetAttr(output, PyTuple_GET_ITEM(pair, 0)));
        int found = PySequence_Contains(PyTuple_GET_ITEM(pair, 1), value.ptr());
        if (found < 0) throw py::error_already_set();
        if (found == 0) return false;
    }
    return true;
}

bool valid_accepted_attributes(PyObject* attributes) {
    if (!PyTuple_CheckExact(attributes)) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attributes); ++i) {
        PyObject* pair = PyTuple_GET_ITEM(attributes, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)))
            return false;
    }
    return true;
}

// A field read after Python code ran since the guard admitted `obj` (a getter, a comparison):
// at its slot while the class is one the layout admits, else as Python reads it (the code may
// have assigned a __class__ whose class attribute shadows the field).
py::object field_after_python(LayoutGuard& guard, const Slot& slot, PyObject* obj) {
    if (guard.admits(obj)) return py::reinterpret_borrow<py::object>(slot.get(obj));
    return steal_or_throw(PyObject_GetAttrString(obj, slot.name()));
}

// OutputSink.still_kept(state). Fields of the documented form are checked here (the reads
// Python makes: getattr, state.metrics, dict.get on the exact dict subclass named); anything
// else, a field deleted, or a sink whose class no longer passes `guard` (accepts() ran Python),
// goes to the Python method, which reads or raises as it does.
bool sink_keeps(PyObject* sink, PyObject* state, LayoutGuard& guard) {
    const Config& c = configured();
    bool admitted = guard.admits(sink);
    // Held: a getter may replace the sink's fields while they are walked.
    py::object attributes, entry;
    if (admitted) {
        attributes = py::reinterpret_borrow<py::object>(c.sink.kept_attributes.peek(sink));
        entry = py::reinterpret_borrow<py::object>(c.sink.kept_entry.peek(sink));
    }
    bool plain = admitted && attributes && PyTuple_CheckExact(attributes.ptr()) && entry;
    for (Py_ssize_t i = 0; plain && i < PyTuple_GET_SIZE(attributes.ptr()); ++i) {
        PyObject* kept = PyTuple_GET_ITEM(attributes.ptr(), i);
        plain = PyTuple_CheckExact(kept) && PyTuple_GET_SIZE(kept) == 3;
    }
    PyObject* mapping_type = nullptr;
    if (plain && entry.ptr() != Py_None) {
        plain = PyTuple_CheckExact(entry.ptr()) && PyTuple_GET_SIZE(entry.ptr()) == 3;
        if (plain) {
            mapping_type = PyTuple_GET_ITEM(entry.ptr(), 0);
            plain = PyType_Check(mapping_type) &&
                    PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(mapping_type), &PyDict_Type);
        }
    }
    if (!plain) {
        PyObject* argv[] = {sink, state};
        py::object verdict =
            steal_or_throw(PyObject_VectorcallMethod(c.names.still_kept, argv, 2, nullptr));
        return truthy(verdict.ptr());
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attributes.ptr()); ++i) {
        PyObject* kept = PyTuple_GET_ITEM(attributes.ptr(), i);
        py::object found =
            steal_or_throw(PyObject_GetAttr(PyTuple_GET_ITEM(kept, 0), PyTuple_GET_ITEM(kept, 1)));
        if (found.ptr() != PyTuple_GET_ITEM(kept, 2)) return false;
    }
    // Read as Python reads self.kept_entry: after the getters above, which may have replaced it
    // (or the sink's class). Another entry is checked by Python.
    py::object entry_now = field_after_python(guard, c.sink.kept_entry, sink);
    if (entry_now.ptr() != entry.ptr()) {
        PyObject* argv[] = {sink, entry_now.ptr(), state};
        py::object verdict =
            steal_or_throw(PyObject_VectorcallMethod(c.names.entry_holds, argv, 3, nullptr));
        return truthy(verdict.ptr());
    }
    if (mapping_type == nullptr) return true;
    // As Python reads state.metrics (a property of a State subclass included): not at a slot.
    py::object metrics = steal_or_throw(PyObject_GetAttr(state, c.names.metrics));
    if (reinterpret_cast<PyObject*>(Py_TYPE(metrics.ptr())) != mapping_type) return false;
    // metrics is a dict (its exact class is a dict subclass). The key's __eq__ may run: the
    // entry tuple holds the value compared, and only its address is compared.
    PyObject* found = PyDict_GetItemWithError(metrics.ptr(), PyTuple_GET_ITEM(entry.ptr(), 1));
    if (found == nullptr && PyErr_Occurred()) throw py::error_already_set();
    return found == PyTuple_GET_ITEM(entry.ptr(), 2);
}

// sink.ends_epoch: `iteration - before == epoch_length`, where `before` is
// getattr(engine, "_iterations_before_epoch", None); with None, Python's
// `iteration % epoch_length == 0`.
bool ends_epoch(PyObject* engine, PyObject* iteration, PyObject* epoch_length) {
    PyObject* found = PyObject_GetAttr(engine, configured().iterations_before_epoch);
    if (found == nullptr) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) throw py::error_already_set();
        PyErr_Clear();
    }
    py::object held = found == nullptr ? py::none() : py::reinterpret_steal<py::object>(found);
    PyObject* before = held.ptr();
    long long it = 0, length = 0, zero = 0;
    if (before == Py_None) {
        if (exact_int(iteration, it) && exact_int(epoch_length, length) && length > 0)
            return it % length == 0;
        py::object rest = steal_or_throw(PyNumber_Remainder(iteration, epoch_length));
        py::object nothing = steal_or_throw(PyLong_FromLong(0));
        return python_compare(rest.ptr(), nothing.ptr(), Py_EQ);
    }
    if (exact_int(iteration, it) && exact_int(epoch_length, length) && exact_int(before, zero))
        return static_cast<__int128>(it) - zero == length;
    py::object done = steal_or_throw(PyNumber_Subtract(iteration, before));
    return python_compare(done.ptr(), epoch_length, Py_EQ);
}

}  // namespace

// OutputSink.__call__ without a Python frame, when the engine is this run's, the state one the
// loop reads at its slots, and the sink's fields hold what the fast path reads. False (nothing
// done) otherwise: the sink is then called as a plain handler.
bool Dispatcher::ran_sink(const Entry& entry, PyObject* event_kwargs) {
    const Config& c = configured();
    if (event_kwargs != nullptr || PyDict_GET_SIZE(entry.kwargs.ptr()) != 0) return false;
    PyObject* sink = entry.callable.ptr();
    if (!sink_guard_.admits(sink)) return false;
    PyObject* engine = PyWeakref_GetObject(entry.engine_ref.ptr());
    if (engine != engine_) return false;  // also a dead reference: Python raises
    PyObject* state = c.engine.state.peek(engine_);
    if (state == nullptr || !state_guard_.admits(state)) return false;
    PyObject* output = c.state.output.peek(state);
    PyObject* iteration = c.state.iteration.peek(state);
    PyObject* values = c.sink.values.peek(sink);
    PyObject* iterations = c.sink.iterations.peek(sink);
    PyObject* on_full = c.sink.on_full.peek(sink);
    PyObject* flush = c.sink.flush_at_epoch_end.peek(sink);
    PyObject* accepted_type = c.sink.accepted_type.peek(sink);
    PyObject* accepted_attributes = c.sink.accepted_attributes.peek(sink);
    if (output == nullptr || iteration == nullptr || values == nullptr ||
        !PyList_CheckExact(values) || iterations == nullptr || !PyList_CheckExact(iterations) ||
        on_full == nullptr || c.sink.limit.peek(sink) == nullptr ||
        (flush != Py_True && flush != Py_False) || accepted_type == nullptr ||
        (accepted_type != Py_None && !PyType_Check(accepted_type)) ||
        accepted_attributes == nullptr || !valid_accepted_attributes(accepted_attributes))
        return false;

    // Held: accepts() may run code (a getter) that replaces the sink's fields or the output.
    py::object held[] = {
        py::reinterpret_borrow<py::object>(sink),
        py::reinterpret_borrow<py::object>(state),
        py::reinterpret_borrow<py::object>(output),
        py::reinterpret_borrow<py::object>(iteration),
        py::reinterpret_borrow<py::object>(values),
        py::reinterpret_borrow<py::object>(iterations),
        py::reinterpret_borrow<py::object>(accepted_type),
        py::reinterpret_borrow<py::object>(accepted_attributes),
    };
    (void)held;
    if (PyList_Append(values, output) < 0 || PyList_Append(iterations, iteration) < 0)
        throw py::error_already_set();
    // From here on Python code may have run (accepts() reads attributes of the output): the
    // sink's and the state's fields are read through their guards again.
    bool full = !sink_accepts(output, accepted_type, accepted_attributes);
    if (!full) {
        // As Python evaluates len(values) >= self.limit: the length first, then the limit (whose
        // getter may run code).
        Py_ssize_t size = PyList_GET_SIZE(values);
        py::object limit = field_after_python(sink_guard_, c.sink.limit, sink);
        long long most = 0;
        if (exact_int(limit.ptr(), most)) {
            full = size >= most;
        } else {
            py::object length = steal_or_throw(PyLong_FromSsize_t(size));
            full = python_compare(length.ptr(), limit.ptr(), Py_GE);
        }
    }
    if (!full) full = !sink_keeps(sink, state, sink_guard_);
    if (!full && truthy(field_after_python(sink_guard_, c.sink.flush_at_epoch_end, sink).ptr())) {
        py::object epoch_length = field_after_python(state_guard_, c.state.epoch_length, state);
        full = epoch_length.ptr() != Py_None && ends_epoch(engine_, iteration, epoch_length.ptr());
        if (!full) {
            py::object max_iters = field_after_python(state_guard_, c.state.max_iters, state);
            full = python_compare(iteration, max_iters.ptr(), Py_EQ);
        }
    }
    if (full) {
        py::object callback = field_after_python(sink_guard_, c.sink.on_full, sink);
        py::object keep_engine = py::reinterpret_borrow<py::object>(engine_);
        PyObject* argv[] = {engine_};
        steal_or_throw(PyObject_Vectorcall(callback.ptr(), argv, 1, nullptr));
    }
    return true;
}

void Dispatcher::call(const Entry& entry, PyObject* event_kwargs) {
    if (entry.kind == Kind::sink && ran_sink(entry, event_kwargs)) return;
    if (entry.kind == Kind::python) {
        py::object one = steal_or_throw(PyTuple_Pack(1, entry.item.ptr()));
        call_through_python(one.ptr(), event_kwargs);
        return;
    }
    if (entry.kind == Kind::count) {
        long long counter = 0;
        // NEVER is the filter's "no count from here on": a counter of that very value asks
        // Python, which tells a hit from a miss there.
        bool in_range = peek_counter(entry.counter, counter) && counter != CountFilter::NEVER;
        if (in_range ? !entry.count.accepts(counter) : !python_filter_accepts(entry)) return;
    } else if (entry.kind == Kind::callable) {
        if (!python_filter_accepts(entry)) return;
    }

    // The cache entry keeps callable, args and kwargs alive during the call: nothing can touch
    // this run's cache until the handler returns, and a handler that edits or rebinds the list
    // only changes what the next firing decodes.
    PyObject* engine = nullptr;
    if (!entry.engine_ref.is_none()) engine = live_engine(entry.engine_ref.ptr());
    py::object keep_engine = py::reinterpret_borrow<py::object>(engine);

    constexpr Py_ssize_t inline_capacity = 8;
    PyObject* inline_argv[inline_capacity];
    std::vector<PyObject*> heap_argv;
    Py_ssize_t n_args = PyTuple_GET_SIZE(entry.args.ptr());
    Py_ssize_t n_total = n_args + (engine != nullptr);
    PyObject** argv = inline_argv;
    if (n_total > inline_capacity) {
        heap_argv.resize(static_cast<size_t>(n_total));
        argv = heap_argv.data();
    }
    Py_ssize_t n = 0;
    if (engine != nullptr) argv[n++] = engine;
    for (Py_ssize_t i = 0; i < n_args; ++i) argv[n++] = PyTuple_GET_ITEM(entry.args.ptr(), i);

    PyObject* call_kwargs = entry.kwargs.ptr();
    py::object merged;
    if (event_kwargs != nullptr) {
        merged = steal_or_throw(PyDict_Copy(call_kwargs));
        if (PyDict_Update(merged.ptr(), event_kwargs) < 0) throw py::error_already_set();
        call_kwargs = merged.ptr();
    }
    if (PyDict_GET_SIZE(call_kwargs) == 0) call_kwargs = nullptr;
    steal_or_throw(
        PyObject_VectorcallDict(entry.callable.ptr(), argv, static_cast<size_t>(n), call_kwargs));
}

bool Dispatcher::peek_any_counter(PyObject* state, Counter counter, long long& value) const {
    const Config& c = configured();
    PyObject* object =
        (counter == Counter::iteration ? c.state.iteration : c.state.epoch).peek(state);
    if (object == nullptr || !PyLong_CheckExact(object)) return false;
    int overflow = 0;
    value = PyLong_AsLongLongAndOverflow(object, &overflow);
    return overflow == 0;
}

void Dispatcher::measure_quiet_span(EventId id, PyObject* list) {
    QuietSpan& span = quiet_[id];
    span = QuietSpan{};
    const std::vector<Entry>& cache = entries_[id];
    if (!PyList_CheckExact(list)) return;  // a tuple someone assigned: walked every time
    Py_ssize_t size = PyList_GET_SIZE(list);
    if (size == 0 || cache.size() < static_cast<size_t>(size)) return;
    if (cache[0].kind != Kind::count) return;
    Counter counter = cache[0].counter;
    // Never raises: a counter that only counter_value() can read gets no span, and the next
    // firing reports it where the Python loop would.
    long long now = 0;
    if (!peek_counter(counter, now) || now == CountFilter::NEVER) return;
    long long until = CountFilter::NEVER;
    for (Py_ssize_t i = 0; i < size; ++i) {
        const Entry& entry = cache[static_cast<size_t>(i)];
        // A handler may have edited the list during the walk: only entries it still holds count.
        if (entry.item.ptr() != PyList_GET_ITEM(list, i)) return;
        if (entry.kind != Kind::count || entry.counter != counter) return;
        until = std::min(until, entry.count.first_accepted_from(now + 1));
    }
    span = QuietSpan{counter, now + 1, until, size};
}

void Dispatcher::walk(EventId id, PyObject* list, PyObject* event_kwargs) {
    // A handler may rebind the list: hold it for the walk.
    py::object keep_alive = py::reinterpret_borrow<py::object>(list);
    if (foreign_[id]) {
        call_through_python(list, event_kwargs);
        return;
    }
    std::vector<Entry>& cache = entries_[id];
    // PySequence_Fast_*: an exact list, or an exact tuple someone assigned.
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(list); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(list, i);
        auto index = static_cast<size_t>(i);
        if (index >= cache.size()) cache.emplace_back();
        if (cache[index].item.ptr() != item) cache[index] = decode(item);
        // Stays in place during the call: only this walk changes this run's cache, and a
        // nested run of the engine has a dispatcher of its own.
        const Entry& entry = cache[index];
        if (timings_ == nullptr) {
            call(entry, event_kwargs);
            continue;
        }
        // Timed with its filter, as the Python loop times a filtered handler's wrapper; a call
        // that raised is counted too (often the one being looked into).
        double started = now_seconds();
        auto charge = [&] {
            PyObject* handler = entry.kind == Kind::python ? entry.item.ptr()
                                                           : PyTuple_GET_ITEM(entry.item.ptr(), 0);
            timings_->add_handler(id, handler, now_seconds() - started);
        };
        try {
            call(entry, event_kwargs);
        } catch (...) {
            charge();
            throw;
        }
        charge();
    }
    // Timed runs walk every time: the profiler counts a rejected filter as a handler call.
    if (timings_ == nullptr) measure_quiet_span(id, list);
}

}  // namespace ember
