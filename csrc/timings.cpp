#include "pybind11.hpp"

#include "timings.hpp"

namespace ember {

void Timings::add_handler(EventId id, PyObject* handler, double elapsed) {
    auto key = std::make_pair(static_cast<int>(id), handler);
    auto found = index_.find(key);
    if (found == index_.end()) {
        found = index_.emplace(key, handlers_.size()).first;
        handlers_.push_back({id, py::reinterpret_borrow<py::object>(handler), Total{}});
    }
    handlers_[found->second].total.add(elapsed);
}

void Timings::flush(py::handle profiler) const {
    const Config& c = configured();
    py::object add = profiler.attr("add");
    if (data.calls) add("data", "data", data.seconds, data.calls);
    if (step.calls) add("step", "step", step.seconds, step.calls);
    for (int id = 0; id < EVENT_COUNT; ++id) {
        const Total& total = events[id];
        if (total.calls)
            add("event", py::handle(c.events[id]).attr("name"), total.seconds, total.calls);
    }
    py::handle handler_name(c.support.handler_name);
    for (const HandlerTotal& entry : handlers_) {
        py::str event_name = py::handle(c.events[entry.event]).attr("name");
        py::str name = py::str("{}:{}").format(event_name, handler_name(entry.handler));
        add("handler", name, entry.total.seconds, entry.total.calls);
    }
}

}  // namespace ember
