#include "pybind11.hpp"

#include "loop.hpp"

namespace ember {

void bind_loop(py::module_& m) {
    m.def(
        "run_loop", [](py::handle engine, py::handle plan) { run_loop(engine.ptr(), plan.ptr()); },
        py::arg("engine"), py::arg("plan"),
        "Run, or resume, the loop of engine.run() as `plan` (a RunPlan) says, once the Python "
        "side has validated the arguments and prepared engine.state.");
}

}  // namespace ember
