#include "pybind11.hpp"

namespace ember {
void bind_config(py::module_& m);
void bind_copy(py::module_& m);
void bind_loop(py::module_& m);
}  // namespace ember

PYBIND11_MODULE(_core, m) {
    m.doc() = "ember's compiled run loop";
    m.attr("__version__") = EMBER_VERSION;
    ember::bind_config(m);
    ember::bind_loop(m);
    ember::bind_copy(m);
    // What `from ember._core import *` gives, and what the generated stub (_core.pyi) declares.
    m.attr("__all__") = py::list(py::make_tuple("configure", "run_loop", "stream_copy"));
}
