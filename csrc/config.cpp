#include "pybind11.hpp"

#include "config.hpp"

#include <stdexcept>

namespace ember {

namespace {

PyObject* leak(py::handle obj) {
    return obj.inc_ref().ptr();
}

PyTypeObject* leak_type(py::handle cls) {
    if (!PyType_Check(cls.ptr())) throw py::type_error("expected a class");
    return reinterpret_cast<PyTypeObject*>(leak(cls));
}

void configure(py::typing::Tuple<py::object, py::ellipsis> events, py::handle engine_cls,
               py::handle state_cls, py::handle registry_cls, py::handle filtered_handler_cls,
               py::handle count_filter_cls, py::module_ support) {
    Config& c = config();
    if (events.size() != EVENT_COUNT)
        throw py::value_error("configure() needs the 13 built-in events");
    for (int id = 0; id < EVENT_COUNT; ++id) c.events[id] = leak(events[id]);
    c.engine_type = leak_type(engine_cls);
    c.state_type = leak_type(state_cls);
    c.registry_type = leak_type(registry_cls);
    c.filtered_handler_type = leak_type(filtered_handler_cls);
    c.count_filter_type = leak_type(count_filter_cls);
    c.repeat = leak(py::module_::import("itertools").attr("repeat"));
    c.support = leak(support);
    c.epoch_completed_key = PyUnicode_InternFromString("EPOCH_COMPLETED");
    c.completed_key = PyUnicode_InternFromString("COMPLETED");
    if (!c.epoch_completed_key || !c.completed_key) throw py::error_already_set();
    c.stalled_epochs_limit = support.attr("STALLED_EPOCHS_LIMIT").cast<long long>();

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

    c.state.iteration = Slot(state_cls, "iteration");
    c.state.epoch = Slot(state_cls, "epoch");
    c.state.epoch_length = Slot(state_cls, "epoch_length");
    c.state.max_epochs = Slot(state_cls, "max_epochs");
    c.state.max_iters = Slot(state_cls, "max_iters");
    c.state.output = Slot(state_cls, "output");
    c.state.batch = Slot(state_cls, "batch");
    c.state.dataloader = Slot(state_cls, "dataloader");
    c.state.times = Slot(state_cls, "times");

    c.registry_version = Slot(registry_cls, "version");
    c.ready = true;
}

}  // namespace

void raise_not_configured() {
    throw std::runtime_error("ember._core.configure() has not been called");
}

void bind_config(py::module_& m) {
    m.def("configure", &configure, py::arg("events"), py::arg("engine_cls"), py::arg("state_cls"),
          py::arg("registry_cls"), py::arg("filtered_handler_cls"), py::arg("count_filter_cls"),
          py::arg("support"),
          "Hand the compiled loop the Python classes it works with; called once by "
          "ember.engine._compiled.");
}

}  // namespace ember
