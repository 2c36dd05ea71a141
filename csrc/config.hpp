// The Python objects the compiled loop works with, handed over once by ember.engine._compiled.
#pragma once

#include "pybind11.hpp"

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

struct Config {
    // Borrowed forever: configure() keeps them alive by leaking a reference on purpose, since
    // static py::objects would be destroyed after the interpreter (pybind11 misc.rst).
    PyObject* events[EVENT_COUNT] = {};
    PyTypeObject* engine_type = nullptr;
    PyTypeObject* state_type = nullptr;
    PyTypeObject* registry_type = nullptr;
    PyTypeObject* filtered_handler_type = nullptr;
    PyTypeObject* count_filter_type = nullptr;
    PyObject* repeat = nullptr;   // itertools.repeat
    PyObject* support = nullptr;  // ember.engine._loop_support
    // Interned names the loop uses every epoch.
    PyObject* epoch_completed_key = nullptr;
    PyObject* completed_key = nullptr;
    long long stalled_epochs_limit = 2;

    struct {
        Slot state, registry, dataloader_iter, init_iter, process_function, resume_point,
            last_event_name, should_terminate, should_terminate_single_epoch, should_interrupt;
    } engine;
    struct {
        Slot iteration, epoch, epoch_length, max_epochs, max_iters, output, batch, dataloader,
            times;
    } state;
    Slot registry_version;
    bool ready = false;
};

// Inline: the loop reads the configuration at every event.
inline Config& config() {
    static Config instance;
    return instance;
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
