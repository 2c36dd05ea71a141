// The Python objects the compiled loop works with, handed over once by configure() when the
// ember.engine package is imported: the classes whose slots it reads, the helpers it calls.
#pragma once

#include "pybind11.hpp"

#include <array>
#include <utility>
#include <vector>

namespace ember {

// Built-in events in the order ember.engine._compiled passes them.
enum EventId : int {
    STARTED,
    EPOCH_STARTED,
    GET_BATCH_STARTED,
    GET_BATCH_COMPLETED,
    DATALOADER_STOP_ITERATION,
    ITERATION_STARTED,
    ITERATION_COMPLETED,
    EPOCH_COMPLETED,
    COMPLETED,
    EXCEPTION_RAISED,
    TERMINATE,
    TERMINATE_SINGLE_EPOCH,
    INTERRUPT,
    EVENT_COUNT
};

// The counter an event's filters see: state.iteration, state.epoch, or none.
enum class Counter { none, iteration, epoch };

// A class whose instances the loop may read at its slot offsets: `base` or a subclass of it
// that shadows none of `fields` (a class attribute or method of the same name would move the
// value to the instance __dict__) and gets and sets attributes the ordinary way.
struct Layout {
    PyTypeObject* base = nullptr;
    std::vector<std::pair<PyObject*, PyObject*>> fields;  // interned name, base's descriptor

    bool admits_class(PyTypeObject* type) const;

private:
    // The last class admitted and its version tag: each run() asks about its engine's and its
    // state's classes again, and the full look walks their class dicts. Not held (Config lives
    // past the interpreter): only compared, and CPython never gives two classes the same tag.
    mutable const PyTypeObject* admitted_ = nullptr;
    mutable unsigned int admitted_tag_ = 0;
};

// Remembers the last classes a Layout admitted, with the version tag CPython gives its attribute
// cache: assigning an attribute to the class or to a base clears the tag, and the class is
// looked at again. The fast path is two compares against the last one; a few earlier ones are
// remembered too, since the sinks of one event may be of several classes (a RunningAverage's
// and a TerminateOnNan's, taken in turn at every iteration), whose full look walks their class
// dicts. The classes are held, so their addresses are not reused while remembered.
class LayoutGuard {
public:
    explicit LayoutGuard(const Layout& layout) : layout_(&layout) {}

    [[gnu::always_inline]] bool admits(PyObject* obj) {
        PyTypeObject* type = Py_TYPE(obj);
        if (type == type_ && tag_ != 0 && type->tp_version_tag == tag_) return true;
        return admits_new_class(type);
    }

    // The class admitted last, as it is: enough for memory safety (an admitted class keeps
    // its instances' layout; __class__ can only change to a class with the same slots), not
    // for a class changed since to shadow a field, which admits() notices.
    [[gnu::always_inline]] bool admitted_last(PyObject* obj) const { return Py_TYPE(obj) == type_; }

private:
    bool admits_new_class(PyTypeObject* type);

    struct Admitted {
        py::object held;
        PyTypeObject* type = nullptr;
        unsigned int tag = 0;
    };

    const Layout* layout_;
    py::object held_;
    PyTypeObject* type_ = nullptr;
    unsigned int tag_ = 0;
    std::array<Admitted, 3> earlier_;  // admitted before the last one, the oldest replaced
    std::size_t oldest_ = 0;
};

struct Config {
    // Borrowed forever: configure() keeps them alive by leaking a reference on purpose, since
    // static py::objects would be destroyed after the interpreter (pybind11 misc.rst).
    PyObject* events[EVENT_COUNT] = {};
    PyTypeObject* plan_type = nullptr;
    PyTypeObject* filtered_handler_type = nullptr;
    PyTypeObject* count_filter_type = nullptr;
    PyObject* event_to_attr = nullptr;  // State.event_to_attr, the dict itself
    PyObject* repeat = nullptr;         // itertools.repeat

    // Python helpers, resolved here so that a renamed one fails at import, not on a rare path.
    struct {
        PyObject *call_handlers, *python_loop, *handle_exception, *log_epoch_completed,
            *log_run_finished, *log_iteration_error, *log_run_error, *warn_data_exhausted,
            *set_sampler_epoch, *sampler_has_set_epoch, *handler_name, *base_is_done;
    } support;
    // Interned attribute names for generic reads.
    struct {
        PyObject *state, *iteration, *epoch, *metrics, *still_kept, *entry_holds;
    } names;
    struct {
        PyObject *terminate_epoch_too_early, *zero_size_data, *iterator_removed, *no_progress;
    } messages;
    // Engine methods a subclass may override, called by name.
    struct {
        PyObject *fire_event, *handle_exception, *setup_engine, *is_done, *setup_dataloader_iter;
    } methods;
    // Interned keys of state.times.
    PyObject* epoch_completed_key = nullptr;
    PyObject* completed_key = nullptr;
    // Engine._iterations_before_epoch's name: written once per epoch and read by sinks through
    // Python's attribute protocol, as the Python loop and OutputSink.__call__ do.
    PyObject* iterations_before_epoch = nullptr;
    long long stalled_epochs_limit = 2;
    long long no_progress_epochs_limit = 1000;

    Layout engine_layout, state_layout, registry_layout;
    // ember.engine.sink.OutputSink, or a subclass that keeps its __call__ and fields.
    Layout sink_layout;
    struct {
        Slot values, iterations, limit, on_full, flush_at_epoch_end, accepted_type,
            accepted_attributes, kept_attributes, kept_entry;
    } sink;
    struct {
        Slot state, registry, dataloader_iter, init_iter, process_function, resume_point,
            last_event_name, should_terminate, should_terminate_single_epoch, should_interrupt;
    } engine;
    struct {
        Slot iteration, epoch, epoch_length, max_epochs, max_iters, output, batch, dataloader,
            times;
    } state;
    struct {
        Slot fire_through_engine, is_done_overridden, setup_dataloader_iter_overridden, logs_info,
            set_sampler_epoch, profiler, resume;
    } plan;
    Slot registry_version;
    bool ready = false;
    int runs_in_progress = 0;  // compiled runs, nested ones included (see RunInProgress)
};

// At namespace scope, not a function's static: Config is not constant-initialized (Layout holds
// a vector), and a function's static would check its initialization guard at every read, which
// also kept configured() from inlining into the loop (~14 instructions a call, 16 calls an
// iteration). Defined in config.cpp.
extern Config the_config;

// Inline: the loop reads the configuration at every event.
inline Config& config() {
    return the_config;
}

[[noreturn]] void raise_not_configured();

// Raises RuntimeError unless configure() ran. The raise is out of line so that this inlines
// into every event's path.
inline const Config& configured() {
    const Config& c = config();
    if (__builtin_expect(!c.ready, 0)) raise_not_configured();
    return c;
}

void bind_config(py::module_& m);

}  // namespace ember
