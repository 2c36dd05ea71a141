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

}  // namespace

void Dispatcher::refresh(PyObject* registry, PyObject* version) {
    const Config& c = configured();
    if (!PyObject_TypeCheck(registry, c.registry_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "engine._event_handlers should be a HandlerRegistry; assign a mapping "
                        "to engine._event_handlers to convert it");
        throw py::error_already_set();
    }
    for (int id = 0; id < EVENT_COUNT; ++id) {
        PyObject* list = PyDict_GetItemWithError(registry, c.events[id]);
        if (list == nullptr && PyErr_Occurred()) throw py::error_already_set();
        if (list != nullptr && !PyList_Check(list) && !PyTuple_Check(list)) {
            PyErr_Format(PyExc_TypeError,
                         "engine._event_handlers[%R] should be a list of (handler, args, kwargs), "
                         "got %.100s",
                         c.events[id], Py_TYPE(list)->tp_name);
            throw py::error_already_set();
        }
        if (list != lists_[id].ptr()) {
            lists_[id] = py::reinterpret_borrow<py::object>(list);
            entries_[id].clear();
            quiet_[id] = QuietSpan{};
        }
    }
    registry_ = py::reinterpret_borrow<py::object>(registry);
    version_ = py::reinterpret_borrow<py::object>(version);
}

Dispatcher::Entry Dispatcher::decode(PyObject* item, EventId id) const {
    const Config& c = configured();
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "handlers of %R should be (handler, args, kwargs) tuples, got %R",
                     c.events[id], item);
        throw py::error_already_set();
    }
    Entry entry;
    entry.item = py::reinterpret_borrow<py::object>(item);
    py::object handler = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(item, 0));
    py::object args = steal_or_throw(PySequence_Tuple(PyTuple_GET_ITEM(item, 1)));
    PyObject* kwargs = PyTuple_GET_ITEM(item, 2);

    entry.engine_ref = py::none();
    if (PyTuple_GET_SIZE(args.ptr()) > 0 && PyWeakref_CheckRef(PyTuple_GET_ITEM(args.ptr(), 0))) {
        entry.engine_ref = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(args.ptr(), 0));
        args = steal_or_throw(PyTuple_GetSlice(args.ptr(), 1, PyTuple_GET_SIZE(args.ptr())));
    }
    entry.args = args;
    // Read at each call: it may be edited.
    entry.kwargs = py::reinterpret_borrow<py::object>(kwargs);

    entry.callable = handler;
    if (Py_TYPE(handler.ptr()) != c.filtered_handler_type) return entry;
    // A filtered handler: evaluate its filter here and call the inner handler directly when
    // its event counts iterations or epochs; otherwise call the wrapper, which reads
    // State.event_to_attr itself (and raises "Unknown event name" where ignite does).
    py::object attr = py::handle(reinterpret_cast<PyObject*>(c.state_type))
                          .attr("event_to_attr")
                          .attr("get")(handler.attr("event"));
    Counter counter = Counter::none;
    if (py::isinstance<py::str>(attr)) {
        std::string name = attr.cast<std::string>();
        if (name == "iteration") counter = Counter::iteration;
        if (name == "epoch") counter = Counter::epoch;
    }
    if (counter == Counter::none) return entry;
    entry.counter = counter;
    entry.callable = handler.attr("handler");
    py::object filter = handler.attr("event_filter");
    if (Py_TYPE(filter.ptr()) == c.count_filter_type) {
        entry.filter_kind = FilterKind::count;
        entry.count = CountFilter::from_python(filter);
    } else {
        entry.filter_kind = FilterKind::callable;
        entry.filter = filter;
        entry.filter_engine_ref = handler.attr("engine_ref");
    }
    return entry;
}

long long Dispatcher::counter_value(Counter counter) {
    long long value = 0;
    if (peek_counter(counter, value)) return value;
    // Not an int in its slot: read it the way that converts (a whole float, __index__) or raises.
    const Config& c = configured();
    PyObject* state = c.engine.state.get(engine_);
    return (counter == Counter::iteration ? c.state.iteration : c.state.epoch).get_int(state);
}

void Dispatcher::call(const Entry& entry, PyObject* event_arg, PyObject* event_kwargs) {
    if (entry.filter_kind == FilterKind::count) {
        if (!entry.count.accepts(counter_value(entry.counter))) return;
    } else if (entry.filter_kind == FilterKind::callable) {
        PyObject* filter_engine = live_engine(entry.filter_engine_ref.ptr());
        py::object counter = steal_or_throw(PyLong_FromLongLong(counter_value(entry.counter)));
        PyObject* filter_args[] = {filter_engine, counter.ptr()};
        py::object verdict =
            steal_or_throw(PyObject_Vectorcall(entry.filter.ptr(), filter_args, 2, nullptr));
        int accepted = PyObject_IsTrue(verdict.ptr());
        if (accepted < 0) throw py::error_already_set();
        if (!accepted) return;
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
    Py_ssize_t n_total = n_args + (engine != nullptr) + (event_arg != nullptr);
    PyObject** argv = inline_argv;
    if (n_total > inline_capacity) {
        heap_argv.resize(static_cast<size_t>(n_total));
        argv = heap_argv.data();
    }
    Py_ssize_t n = 0;
    if (engine != nullptr) argv[n++] = engine;
    if (event_arg != nullptr) argv[n++] = event_arg;
    for (Py_ssize_t i = 0; i < n_args; ++i) argv[n++] = PyTuple_GET_ITEM(entry.args.ptr(), i);

    PyObject* call_kwargs = entry.kwargs.ptr();
    py::object merged;
    if (event_kwargs != nullptr || !PyDict_Check(call_kwargs)) {
        merged = steal_or_throw(PyDict_New());
        if (PyDict_Merge(merged.ptr(), call_kwargs, 1) < 0) throw py::error_already_set();
        if (event_kwargs != nullptr && PyDict_Update(merged.ptr(), event_kwargs) < 0)
            throw py::error_already_set();
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
    if (!PyList_Check(list)) return;  // a tuple someone assigned: walked every time
    Py_ssize_t size = PyList_GET_SIZE(list);
    if (size == 0 || cache.size() < static_cast<size_t>(size)) return;
    if (cache[0].filter_kind != FilterKind::count) return;
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
        if (entry.filter_kind != FilterKind::count || entry.counter != counter) return;
        until = std::min(until, entry.count.first_accepted_from(now + 1));
    }
    span = QuietSpan{counter, now + 1, until, size};
}

void Dispatcher::walk(EventId id, PyObject* list, PyObject* event_arg, PyObject* event_kwargs) {
    // A handler may rebind the list: hold it for the walk.
    py::object keep_alive = py::reinterpret_borrow<py::object>(list);
    std::vector<Entry>& cache = entries_[id];
    // PySequence_Fast_*: the registry holds lists, or tuples someone assigned.
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(list); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(list, i);
        auto index = static_cast<size_t>(i);
        if (index >= cache.size()) cache.emplace_back();
        if (cache[index].item.ptr() != item) cache[index] = decode(item, id);
        const Entry& entry = cache[index];
        if (timings_ == nullptr) {
            call(entry, event_arg, event_kwargs);
            continue;
        }
        // Timed with its filter, as the Python loop times a filtered handler's wrapper.
        double started = now_seconds();
        call(entry, event_arg, event_kwargs);
        timings_->add_handler(id, PyTuple_GET_ITEM(item, 0), now_seconds() - started);
    }
    // Timed runs walk every time: the profiler counts a rejected filter as a handler call.
    if (timings_ == nullptr) measure_quiet_span(id, list);
}

}  // namespace ember
