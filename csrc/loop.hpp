// The run loop of Engine.run(), event for event the loop of ember/engine/_pyloop.py.
#pragma once

#include "pybind11.hpp"

#include "dispatch.hpp"
#include "timings.hpp"

#include <memory>

namespace ember {

// Resume points, as in ember/engine/_loop_support.py.
enum Phase : int {
    START = 0,
    AFTER_STARTED = 1,
    AFTER_EPOCH_STARTED = 2,
    AFTER_GET_BATCH_STARTED = 3,
    AFTER_DATALOADER_STOP_ITERATION = 4,
    AFTER_GET_BATCH_COMPLETED = 5,
    AFTER_ITERATION_STARTED = 6,
    AFTER_ITERATION_COMPLETED = 7,
    EPOCH_END = 8,
    AFTER_EPOCH_COMPLETED = 9,
};

// Runs (or resumes) engine.run()'s loop as `plan` (an ember.engine._plan.RunPlan) says. An
// engine whose class keeps a loop field outside its slot (a subclass's class attribute or
// method of the same name, its own __setattr__) runs on the Python loop, which reads it the
// way Python does. An error without a traceback gets an entry in this file (add_loop_frame in
// loop.cpp).
void run_loop(PyObject* engine, PyObject* plan);

// One call of Engine.run() on the compiled loop. It holds Python references only while it
// runs: on every exit the loop's position goes back to the engine (engine._resume_point when
// interrupted) and this object, with every reference it took, is destroyed.
class Run {
public:
    Run(PyObject* engine, PyObject* plan);
    void run();  // the loop, then the timings to an attached profiler

private:
    // Control flow of the checks after events; never cross a Python frame.
    struct Terminate {};
    struct TerminateEpoch {};
    struct Interrupted {};

    void loop();
    void complete();
    void check(Phase reached);
    void epochs();
    bool finish_epoch();
    void iterations();
    bool next_batch();
    bool epoch_is_over();
    bool learn_epoch_length();  // true when the epoch goes on

    bool fire(EventId id);  // false when the event had no handler
    bool dispatch(EventId id);
    void fire_terminate_single_epoch();
    void setup_dataloader_iter();
    void call_support(PyObject* helper);
    void call_support(PyObject* helper, PyObject* arg);
    void call_method(PyObject* name);
    [[gnu::always_inline]] inline void check_engine_class();
    void increment(const Slot& slot, WrittenInt* written);
    long long initial_iter_counter();
    void note_iterations_before_epoch();
    void check_progress();
    void route_exception(const py::error_already_set& error, int line);
    void set_epoch_time(PyObject* key, double seconds);
    [[gnu::always_inline]] inline PyObject* state();
    [[gnu::always_inline]] inline py::object held_state();
    bool is_done();
    void set_sampler_epoch();
    bool last_event_is_stop_iteration() const;

    PyObject* engine_;
    WrittenInt iteration_;  // these three declared before dispatcher_, which reads them
    LayoutGuard engine_guard_;
    LayoutGuard state_guard_;
    Dispatcher dispatcher_;
    py::object profiler_;            // engine._profiler, None when not profiling
    py::object checked_dataloader_;  // the data last looked at for a sampler with set_epoch
    bool sampler_has_set_epoch_ = false;
    // Iterations between two releases of the GIL (see let_others_run()).
    static constexpr int GIL_RELEASE_INTERVAL = 64;
    int steps_since_gil_release_ = 0;
    [[gnu::always_inline]] inline void let_others_run();
    [[gnu::noinline]] static void take_gil_back(PyThreadState* state);
    bool set_sampler_epoch_ = true;
    std::unique_ptr<Timings> timings_;
    bool python_dispatch_ = false;
    bool native_setup_iter_ = true;
    bool native_is_done_ = true;
    bool logs_info_ = false;

    int phase_ = START;
    long long iter_counter_ = 0;
    bool restarted_ = false;
    double run_started_ = 0.0;
    double epoch_started_ = 0.0;
    py::object epoch_first_iteration_ = py::int_(0);
    long long stalled_epochs_ = 0;
    py::object counted_iterator_ = py::none();  // the iterator batches_drawn_ counts
    long long batches_drawn_ = 0;
};

}  // namespace ember
