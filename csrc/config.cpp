#include "pybind11.hpp"

#include "config.hpp"

#include <stdexcept>

namespace ember {

Config the_config;

namespace {

PyObject* leak(py::handle obj) {
    return obj.inc_ref().ptr();
}

PyTypeObject* leak_type(py::handle cls) {
    if (!PyType_Check(cls.ptr())) throw py::type_error("expected a class");
    return reinterpret_cast<PyTypeObject*>(leak(cls));
}

PyObject* intern(const char* text) {
    PyObject* name = PyUnicode_InternFromString(text);
    if (name == nullptr) throw py::error_already_set();
    return name;  // leaked on purpose, as the other configured objects
}

PyObject* leak_callable(py::handle found, const char* name) {
    if (!PyCallable_Check(found.ptr()))
        throw py::type_error(std::string(name) + " should be callable");
    return leak(found);
}

// The callable `name` of `owner`; AttributeError (at import) when it was renamed.
PyObject* resolve(py::handle owner, const char* name) {
    return leak_callable(owner.attr(name), name);
}

Layout layout_of(py::handle cls, std::initializer_list<const char*> names) {
    Layout layout;
    layout.base = leak_type(cls);
    for (const char* name : names) {
        Slot(cls, name);  // raises unless it is a __slots__ member of the class or a base
        layout.fields.emplace_back(intern(name), leak(py::getattr(cls, name)));
    }
    return layout;
}

void configure(py::typing::Tuple<py::object, py::ellipsis> events, py::handle engine_cls,
               py::handle state_cls, py::handle registry_cls, py::handle filtered_handler_cls,
               py::handle count_filter_cls, py::handle plan_cls, py::module_ support,
               py::handle call_handlers, py::handle python_loop) {
    Config& c = config();
    // A run's guards admitted classes by the layouts and slot offsets this would replace.
    if (c.runs_in_progress > 0)
        throw std::runtime_error("ember._core.configure() cannot be called during a run");
    c.ready = false;
    if (events.size() != EVENT_COUNT)
        throw py::value_error("configure() needs the 13 built-in events");
    for (int id = 0; id < EVENT_COUNT; ++id) c.events[id] = leak(events[id]);
    c.plan_type = leak_type(plan_cls);
    c.filtered_handler_type = leak_type(filtered_handler_cls);
    c.count_filter_type = leak_type(count_filter_cls);
    c.event_to_attr = leak(state_cls.attr("event_to_attr"));
    if (!PyDict_CheckExact(c.event_to_attr))
        throw py::type_error("State.event_to_attr should be a dict");
    c.repeat = leak(py::module_::import("itertools").attr("repeat"));

    c.support.call_handlers = leak_callable(call_handlers, "call_handlers");
    c.support.python_loop = leak_callable(python_loop, "python_loop");
    c.support.handle_exception = resolve(support, "handle_exception");
    c.support.log_epoch_completed = resolve(support, "log_epoch_completed");
    c.support.log_run_finished = resolve(support, "log_run_finished");
    c.support.log_iteration_error = resolve(support, "log_iteration_error");
    c.support.log_run_error = resolve(support, "log_run_error");
    c.support.warn_data_exhausted = resolve(support, "warn_data_exhausted");
    c.support.set_sampler_epoch = resolve(support, "set_sampler_epoch");
    c.support.sampler_has_set_epoch = resolve(support, "sampler_has_set_epoch");
    c.support.handler_name = resolve(support, "handler_name");
    c.support.base_is_done = resolve(engine_cls, "_is_done");
    c.names.state = intern("state");
    c.names.iteration = intern("iteration");
    c.names.epoch = intern("epoch");
    c.names.metrics = intern("metrics");
    c.names.still_kept = intern("still_kept");
    c.names.entry_holds = intern("entry_holds");
    c.messages.terminate_epoch_too_early = leak(support.attr("TERMINATE_EPOCH_TOO_EARLY"));
    c.messages.zero_size_data = leak(support.attr("ZERO_SIZE_DATA"));
    c.messages.iterator_removed = leak(support.attr("ITERATOR_REMOVED"));
    c.messages.no_progress = leak(support.attr("NO_PROGRESS"));
    c.stalled_epochs_limit = support.attr("STALLED_EPOCHS_LIMIT").cast<long long>();
    c.no_progress_epochs_limit = support.attr("NO_PROGRESS_EPOCHS_LIMIT").cast<long long>();

    c.methods.fire_event = intern("_fire_event");
    c.methods.handle_exception = intern("_handle_exception");
    c.methods.setup_engine = intern("_setup_engine");
    c.methods.is_done = intern("_is_done");
    c.methods.setup_dataloader_iter = intern("_setup_dataloader_iter");
    for (PyObject* name : {c.methods.fire_event, c.methods.handle_exception, c.methods.setup_engine,
                           c.methods.is_done, c.methods.setup_dataloader_iter}) {
        if (!py::hasattr(engine_cls, name))
            throw py::attribute_error("Engine has no method " + py::str(name).cast<std::string>());
    }
    c.epoch_completed_key = intern("EPOCH_COMPLETED");
    c.completed_key = intern("COMPLETED");
    c.iterations_before_epoch = intern("_iterations_before_epoch");

    c.engine_layout = layout_of(
        engine_cls, {"state", "_event_handlers_registry", "_dataloader_iter", "_init_iter",
                     "_process_function", "_resume_point", "last_event_name", "should_terminate",
                     "should_terminate_single_epoch", "should_interrupt"});
    c.engine.state = Slot(engine_cls, "state");
    c.engine.registry = Slot(engine_cls, "_event_handlers_registry");
    c.engine.dataloader_iter = Slot(engine_cls, "_dataloader_iter");
    c.engine.init_iter = Slot(engine_cls, "_init_iter");
    c.engine.process_function = Slot(engine_cls, "_process_function");
    c.engine.resume_point = Slot(engine_cls, "_resume_point");
    c.engine.last_event_name = Slot(engine_cls, "last_event_name");
    c.engine.should_terminate = Slot(engine_cls, "should_terminate");
    c.engine.should_terminate_single_epoch = Slot(engine_cls, "should_terminate_single_epoch");
    c.engine.should_interrupt = Slot(engine_cls, "should_interrupt");

    c.state_layout = layout_of(state_cls, {"iteration", "epoch", "epoch_length", "max_epochs",
                                           "max_iters", "output", "batch", "dataloader", "times"});
    c.state.iteration = Slot(state_cls, "iteration");
    c.state.epoch = Slot(state_cls, "epoch");
    c.state.epoch_length = Slot(state_cls, "epoch_length");
    c.state.max_epochs = Slot(state_cls, "max_epochs");
    c.state.max_iters = Slot(state_cls, "max_iters");
    c.state.output = Slot(state_cls, "output");
    c.state.batch = Slot(state_cls, "batch");
    c.state.dataloader = Slot(state_cls, "dataloader");
    c.state.times = Slot(state_cls, "times");

    c.plan.fire_through_engine = Slot(plan_cls, "fire_through_engine");
    c.plan.is_done_overridden = Slot(plan_cls, "is_done_overridden");
    c.plan.setup_dataloader_iter_overridden = Slot(plan_cls, "setup_dataloader_iter_overridden");
    c.plan.logs_info = Slot(plan_cls, "logs_info");
    c.plan.set_sampler_epoch = Slot(plan_cls, "set_sampler_epoch");
    c.plan.profiler = Slot(plan_cls, "profiler");
    c.plan.resume = Slot(plan_cls, "resume");

    py::object sink_cls = support.attr("OutputSink");
    c.sink_layout = layout_of(
        sink_cls, {"values", "iterations", "limit", "on_full", "flush_at_epoch_end",
                   "accepted_type", "accepted_attributes", "kept_attributes", "kept_entry"});
    // A subclass's own __call__, accepts(), still_kept() or entry_holds() is its behaviour: such
    // a class is called through Python.
    for (const char* method : {"__call__", "accepts", "still_kept", "entry_holds"})
        c.sink_layout.fields.emplace_back(intern(method), leak(sink_cls.attr(method)));
    c.sink.values = Slot(sink_cls, "values");
    c.sink.iterations = Slot(sink_cls, "iterations");
    c.sink.limit = Slot(sink_cls, "limit");
    c.sink.on_full = Slot(sink_cls, "on_full");
    c.sink.flush_at_epoch_end = Slot(sink_cls, "flush_at_epoch_end");
    c.sink.accepted_type = Slot(sink_cls, "accepted_type");
    c.sink.accepted_attributes = Slot(sink_cls, "accepted_attributes");
    c.sink.kept_attributes = Slot(sink_cls, "kept_attributes");
    c.sink.kept_entry = Slot(sink_cls, "kept_entry");

    c.registry_layout = layout_of(registry_cls, {"version"});
    c.registry_version = Slot(registry_cls, "version");
    c.ready = true;
}

}  // namespace

namespace {

// Whether every key of the class dicts along `type`'s MRO is an exact str. Only then does
// _PyType_Lookup run no Python code: a key of another type whose hash collides with a looked-up
// name has its __eq__ called, which may free the object being admitted (or change its class).
// PyDict_Next itself runs no Python code.
bool class_dicts_have_str_keys(PyTypeObject* type) {
    PyObject* mro = type->tp_mro;
    if (mro == nullptr || !PyTuple_Check(mro)) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
        PyObject* dict = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i))->tp_dict;
        if (dict == nullptr) continue;  // a static built-in type on 3.12+: str keys only
        Py_ssize_t position = 0;
        PyObject *key = nullptr, *value = nullptr;
        while (PyDict_Next(dict, &position, &key, &value))
            if (!PyUnicode_CheckExact(key)) return false;
    }
    return true;
}

}  // namespace

bool Layout::admits_class(PyTypeObject* type) const {
    if (type == admitted_ && admitted_tag_ != 0 && type->tp_version_tag == admitted_tag_)
        return true;
    if (!PyType_IsSubtype(type, base)) return false;
    if (type->tp_getattro != PyObject_GenericGetAttr ||
        type->tp_setattro != PyObject_GenericSetAttr)
        return false;
    if (!class_dicts_have_str_keys(type)) return false;
    for (const auto& [name, descriptor] : fields) {
        // Borrowed; never raises (it clears a lookup error and answers null) and, with str keys
        // only, runs no Python code.
        if (_PyType_Lookup(type, name) != descriptor) return false;
    }
    admitted_ = type;
    admitted_tag_ = type->tp_version_tag;  // given by _PyType_Lookup where it could
    return true;
}

bool LayoutGuard::admits_new_class(PyTypeObject* type) {
    for (Admitted& earlier : earlier_) {
        if (earlier.type == type && earlier.tag != 0 && type->tp_version_tag == earlier.tag) {
            // Admitted before and unchanged since: the last one again, and the last one earlier.
            std::swap(earlier.held, held_);
            std::swap(earlier.type, type_);
            std::swap(earlier.tag, tag_);
            return true;
        }
    }
    if (!layout_->admits_class(type)) return false;
    if (type_ != nullptr) {
        Admitted& replaced = earlier_[oldest_];
        oldest_ = (oldest_ + 1) % earlier_.size();
        replaced.held = std::move(held_);
        replaced.type = type_;
        replaced.tag = tag_;
    }
    // _PyType_Lookup has given the class a version tag if it could; 0 means it could not, and
    // the class is looked at again each time.
    held_ = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(type));
    type_ = type;
    tag_ = type->tp_version_tag;
    return true;
}

void raise_not_configured() {
    throw std::runtime_error("ember._core.configure() has not been called");
}

void bind_config(py::module_& m) {
    m.def("configure", &configure, py::arg("events"), py::arg("engine_cls"), py::arg("state_cls"),
          py::arg("registry_cls"), py::arg("filtered_handler_cls"), py::arg("count_filter_cls"),
          py::arg("plan_cls"), py::arg("support"), py::arg("call_handlers"), py::arg("python_loop"),
          "Hand the compiled loop the Python classes and helpers it works with; called once "
          "when ember.engine is imported.");
}

}  // namespace ember
