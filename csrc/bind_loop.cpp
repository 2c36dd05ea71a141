#include "pybind11.hpp"

#include "loop.hpp"

namespace ember {

void bind_loop(py::module_& m) {
    m.def(
        "run_loop", [](py::handle engine) { run_loop(engine.ptr()); }, py::arg("engine"),
        "Run, or resume, the loop of engine.run() once the Python side has validated the "
        "arguments and prepared engine.state.");
}

}  // namespace ember
