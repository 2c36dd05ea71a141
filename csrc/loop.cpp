#include "pybind11.hpp"

#include "loop.hpp"

#include <frameobject.h>

#include <algorithm>
#include <chrono>
#ifdef __GLIBCXX__
#include <cxxabi.h>  // abi::__forced_unwind
#include <unistd.h>  // pause
#endif

namespace ember {

double now_seconds() {
    using clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC, as time.perf_counter on Linux
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

namespace {

bool equals_text(PyObject* value, const char* text) {
    if (!PyUnicode_Check(value)) return false;
    return PyUnicode_CompareWithASCIIString(value, text) == 0;
}

// An exception that the loop raised itself, or a C function it called, has no traceback: no
// Python frame saw it. Give it one entry, this file at `line` in `function`, where the Python
// loop's traceback shows its own frame. Best effort: if the entry cannot be made, the exception
// goes on without it.
void add_loop_frame(PyObject* exception, const char* function, int line) {
    try {
        py::object globals = steal_or_throw(PyDict_New());
        py::object code =
            steal_or_throw(reinterpret_cast<PyObject*>(PyCode_NewEmpty(__FILE__, function, line)));
        py::object frame = steal_or_throw(reinterpret_cast<PyObject*>(
            PyFrame_New(PyThreadState_Get(), reinterpret_cast<PyCodeObject*>(code.ptr()),
                        globals.ptr(), nullptr)));
        py::object traceback =
            py::module_::import("types").attr("TracebackType")(py::none(), frame, 0, line);
        if (PyException_SetTraceback(exception, traceback.ptr()) < 0) throw py::error_already_set();
    } catch (const py::error_already_set&) {
        // caught, so cleared: the original exception stays as it was
    }
}

// error_already_set keeps the traceback apart from the exception on Python < 3.12; put it
// back so that handlers and the user see where the exception came from (see add_loop_frame
// for one that has none).
py::object exception_with_traceback(const py::error_already_set& error, const char* function,
                                    int line) {
    py::object value = error.value();
    if (!error.trace()) {
        add_loop_frame(value.ptr(), function, line);
    } else if (PyException_SetTraceback(value.ptr(), error.trace().ptr()) < 0) {
        throw py::error_already_set();
    }
    return value;
}

// Raise `exception` with its __traceback__ (error_already_set would restore the one it
// fetched).
[[noreturn]] void raise_exception(py::object exception) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exception.release().ptr());
#else
    PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr()));
    Py_INCREF(type);
    PyObject* traceback = PyException_GetTraceback(exception.ptr());
    PyErr_Restore(type, exception.release().ptr(), traceback);
#endif
    throw py::error_already_set();
}

[[noreturn]] void raise_message(PyObject* type, PyObject* message) {
    PyErr_SetObject(type, message);
    throw py::error_already_set();
}

// A plan flag: an exact bool (the plan is built by ember.engine, never by hand).
bool plan_flag(const Slot& slot, PyObject* plan) {
    PyObject* value = slot.get(plan);
    if (!PyBool_Check(value)) throw py::type_error("RunPlan flags should be bools");
    return value == Py_True;
}

// Python's `a == b`, in C++ for two ints.
bool equals(PyObject* a, PyObject* b) {
    long long x = 0;
    long long y = 0;
    if (exact_int(a, x) && exact_int(b, y)) return x == y;
    return python_compare(a, b, Py_EQ);
}

bool equals(long long a, PyObject* b) {
    long long y = 0;
    if (exact_int(b, y)) return a == y;
    py::object boxed = steal_or_throw(PyLong_FromLongLong(a));
    return python_compare(boxed.ptr(), b, Py_EQ);
}

// Python's -(-numerator // denominator) for a nonzero denominator, as an int object.
py::object ceil_div(PyObject* numerator, long long denominator) {
    long long n = 0;
    if (exact_int(numerator, n)) {
        __int128 q = static_cast<__int128>(n) / denominator;
        if (static_cast<__int128>(n) % denominator != 0 && ((n < 0) == (denominator < 0))) ++q;
        if (q <= std::numeric_limits<long long>::max() &&
            q >= std::numeric_limits<long long>::min())
            return steal_or_throw(PyLong_FromLongLong(static_cast<long long>(q)));
    }
    py::object held = py::reinterpret_borrow<py::object>(numerator);
    py::object d = steal_or_throw(PyLong_FromLongLong(denominator));
    py::object negated = steal_or_throw(PyNumber_Negative(numerator));
    py::object floor = steal_or_throw(PyNumber_FloorDivide(negated.ptr(), d.ptr()));
    return steal_or_throw(PyNumber_Negative(floor.ptr()));
}

}  // namespace

namespace {

// Counted while a Run exists: configure() is refused meanwhile.
struct RunInProgress {
    RunInProgress() { ++config().runs_in_progress; }
    ~RunInProgress() { --config().runs_in_progress; }
    RunInProgress(const RunInProgress&) = delete;
    RunInProgress& operator=(const RunInProgress&) = delete;
};

void run_or_hand_over(PyObject* engine, PyObject* plan) {
    const Config& c = configured();
    if (Py_TYPE(plan) != c.plan_type) throw py::type_error("run_loop() needs a RunPlan");
    if (!PyObject_TypeCheck(engine, c.engine_layout.base))
        throw py::type_error("run_loop() needs an ember.engine.Engine");
    // Such a class on the engine or its state at the start runs on the Python loop; one
    // assigned during the run is an error (Run::state(), Run::check_engine_class()).
    PyObject* state = c.engine.state.peek(engine);
    if (!c.engine_layout.admits_class(Py_TYPE(engine)) ||
        (state != nullptr && PyObject_TypeCheck(state, c.state_layout.base) &&
         !c.state_layout.admits_class(Py_TYPE(state)))) {
        PyObject* args[] = {engine, plan};
        steal_or_throw(PyObject_Vectorcall(c.support.python_loop, args, 2, nullptr));
        return;
    }
    RunInProgress counted;
    Run(engine, plan).run();
}

}  // namespace

void run_loop(PyObject* engine, PyObject* plan) {
    try {
        run_or_hand_over(engine, plan);
    } catch (const py::error_already_set& error) {
        if (error.trace()) throw;
        // Raised before or outside the routed part of the loop (a malformed resume point, say)
        raise_exception(exception_with_traceback(error, "run_loop", __LINE__));
    } catch (const py::builtin_exception& error) {  // pybind11's own (a failed cast, say)
        error.set_error();
        raise_exception(exception_with_traceback(py::error_already_set(), "run_loop", __LINE__));
    }
}

namespace {

bool exact_int_at(const Slot& slot, PyObject* obj, long long& value) {
    PyObject* found = slot.peek(obj);
    return found != nullptr && exact_int(found, value);
}

bool bound_at(const Slot& slot, PyObject* obj, std::optional<long long>& bound) {
    PyObject* found = slot.peek(obj);
    if (found == nullptr) return false;
    if (found == Py_None) return true;
    long long value = 0;
    if (!exact_int(found, value)) return false;
    bound = value;
    return true;
}

}  // namespace

// engine.state, checked to be read at its slots: a handler may have assigned anything.
inline PyObject* Run::state() {
    PyObject* state = configured().engine.state.get(engine_);
    // The class compare is what makes the slot reads safe; a class changed since to shadow a
    // field (its version tag moved) is noticed before the next step (let_others_run()).
    if (__builtin_expect(!state_guard_.admitted_last(state), 0) && !state_guard_.admits(state))
        raise_foreign_state(state);
    return state;
}

// The engine's class passed run_loop()'s look; a handler may have changed it since (assigned
// __class__, or a class attribute that shadows a slot).
inline void Run::check_engine_class() {
    if (__builtin_expect(engine_guard_.admits(engine_), 1)) return;
    PyErr_Format(PyExc_RuntimeError,
                 "the class of the engine changed during run() to %.100s, which keeps a field "
                 "of the loop outside its slot; the compiled loop cannot go on (the Python loop, "
                 "backend='python', can)",
                 Py_TYPE(engine_)->tp_name);
    throw py::error_already_set();
}

// Before each step and each epoch. Python runs signal handlers only between bytecodes, and
// hands the GIL to other threads only there: a step written in C, or epochs that call no Python
// at all, would never let Ctrl-C or a thread calling terminate() through. The GIL is held when
// this is called. Also where a class the engine or its state was given, or a class of theirs
// changed to shadow a field, during the run is noticed.
inline void Run::let_others_run() {
    check_engine_class();
    PyObject* current = configured().engine.state.get(engine_);
    if (!state_guard_.admits(current)) raise_foreign_state(current);
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (++steps_since_gil_release_ == GIL_RELEASE_INTERVAL) {
        steps_since_gil_release_ = 0;
        // Safe: nothing touches a Python object while it is released.
        take_gil_back(PyEval_SaveThread());
    }
}

// Not py::gil_scoped_release: when the interpreter is finalizing, CPython < 3.14 ends a thread
// that takes the GIL back (a daemon thread still running) with pthread_exit, whose unwinding
// aborts the process ("terminate called without an active exception") when it starts in a
// destructor. Unwinding the loop's frames instead would drop references without the GIL, so
// such a thread waits here for the process to end, as CPython 3.14 has it wait.
void Run::take_gil_back(PyThreadState* state) {
#ifdef __GLIBCXX__
    try {
        PyEval_RestoreThread(state);
    } catch (abi::__forced_unwind&) {
        for (;;) pause();
    }
#else
    PyEval_RestoreThread(state);
#endif
}

Run::Run(PyObject* engine, PyObject* plan)
    : engine_(engine),
      engine_guard_(configured().engine_layout),
      state_guard_(configured().state_layout),
      dispatcher_(engine, iteration_, state_guard_) {
    const Config& c = configured();
    python_dispatch_ = plan_flag(c.plan.fire_through_engine, plan);
    native_is_done_ = !plan_flag(c.plan.is_done_overridden, plan);
    native_setup_iter_ = !plan_flag(c.plan.setup_dataloader_iter_overridden, plan);
    logs_info_ = plan_flag(c.plan.logs_info, plan);
    set_sampler_epoch_ = plan_flag(c.plan.set_sampler_epoch, plan);
    profiler_ = py::reinterpret_borrow<py::object>(c.plan.profiler.get(plan));
    if (!profiler_.is_none()) {
        timings_ = std::make_unique<Timings>();
        dispatcher_.time_handlers(timings_.get());
    }

    py::object point = py::reinterpret_borrow<py::object>(c.plan.resume.get(plan));
    if (point.is_none()) {
        c.engine.should_terminate.set(engine, Py_False);
        c.engine.should_terminate_single_epoch.set(engine, Py_False);
        c.engine.should_interrupt.set(engine, Py_False);
        set_epoch_time(c.epoch_completed_key, 0.0);
        set_epoch_time(c.completed_key, 0.0);
        run_started_ = now_seconds();
        return;
    }
    // Checked by the plan's builder (_loop_support.resume_point).
    auto fields = point.cast<py::tuple>();
    if (fields.size() != 9) throw py::value_error("engine._resume_point is malformed");
    phase_ = fields[0].cast<int>();
    switch (phase_) {
        case AFTER_STARTED:
        case AFTER_EPOCH_STARTED:
        case AFTER_GET_BATCH_STARTED:
        case AFTER_DATALOADER_STOP_ITERATION:
        case AFTER_GET_BATCH_COMPLETED:
        case AFTER_ITERATION_STARTED:
        case AFTER_ITERATION_COMPLETED:
        case AFTER_EPOCH_COMPLETED:
            break;
        default:  // the loop would take no branch for another phase, and spin
            throw py::value_error("engine._resume_point is malformed: not a resume phase");
    }
    iter_counter_ = fields[1].cast<long long>();
    restarted_ = fields[2].cast<bool>();
    run_started_ = fields[3].cast<double>();
    epoch_started_ = fields[4].cast<double>();
    epoch_first_iteration_ = fields[5];
    stalled_epochs_ = fields[6].cast<long long>();
    counted_iterator_ = fields[7];
    batches_drawn_ = fields[8].cast<long long>();
}

// state(), held: for a block that reads the state again after running Python code (an __eq__,
// a __del__ of a value it replaced), which may rebind engine.state and free the old one.
inline py::object Run::held_state() {
    return py::reinterpret_borrow<py::object>(state());
}

void Run::run() {
    if (!timings_) {
        loop();
        return;
    }
    try {
        loop();
    } catch (...) {
        try {
            timings_->flush(profiler_);
        } catch (py::error_already_set& flush_error) {
            flush_error.discard_as_unraisable("ember: adding timings to the profiler");
        }
        throw;
    }
    timings_->flush(profiler_);
}

void Run::loop() {
    try {
        try {
            epochs();
        } catch (const Terminate&) {
            fire(TERMINATE);
        } catch (const TerminateEpoch&) {
            raise_message(PyExc_RuntimeError, configured().messages.terminate_epoch_too_early);
        }
        complete();
    } catch (const Interrupted&) {
        return;
    } catch (const py::error_already_set& error) {
        configured().engine.dataloader_iter.set(engine_, Py_None);
        py::object exception = exception_with_traceback(error, "loop", __LINE__);
        call_support(configured().support.log_run_error, exception.ptr());
        call_support(configured().support.handle_exception, exception.ptr());
    }
    configured().engine.dataloader_iter.set(engine_, Py_None);
}

void Run::complete() {
    const Config& c = configured();
    set_epoch_time(c.completed_key, now_seconds() - run_started_);
    if (!equals_text(c.engine.should_terminate.get(engine_), "skip_completed")) {
        if (fire(COMPLETED)) set_epoch_time(c.completed_key, now_seconds() - run_started_);
    }
    if (logs_info_) call_support(c.support.log_run_finished);
}

void Run::check(Phase reached) {
    const Config& c = configured();
    phase_ = reached;
    PyObject* terminate = c.engine.should_terminate.get(engine_);
    PyObject* terminate_epoch = c.engine.should_terminate_single_epoch.get(engine_);
    PyObject* interrupt = c.engine.should_interrupt.get(engine_);
    if (terminate == Py_False && terminate_epoch == Py_False && interrupt == Py_False) return;
    check_engine_class();
    // Read again before each test: a __bool__ may assign the other flags.
    if (truthy(c.engine.should_terminate.get(engine_))) throw Terminate{};
    if (truthy(c.engine.should_terminate_single_epoch.get(engine_))) throw TerminateEpoch{};
    if (truthy(c.engine.should_interrupt.get(engine_))) {
        fire(INTERRUPT);
        c.engine.should_interrupt.set(engine_, Py_False);
        py::tuple point = py::make_tuple(static_cast<int>(reached), iter_counter_, restarted_,
                                         run_started_, epoch_started_, epoch_first_iteration_,
                                         stalled_epochs_, counted_iterator_, batches_drawn_);
        c.engine.resume_point.set(engine_, point.ptr());
        throw Interrupted{};
    }
}

void Run::epochs() {
    const Config& c = configured();
    if (phase_ == START) {
        fire(STARTED);
        check(AFTER_STARTED);
    }
    if (phase_ > AFTER_STARTED && finish_epoch()) return;
    while (!is_done() && !truthy(c.engine.should_terminate.get(engine_))) {
        let_others_run();
        increment(c.state.epoch, nullptr);
        if (set_sampler_epoch_) set_sampler_epoch();
        epoch_started_ = now_seconds();
        epoch_first_iteration_ = py::reinterpret_borrow<py::object>(c.state.iteration.get(state()));
        fire(EPOCH_STARTED);
        check(AFTER_EPOCH_STARTED);
        if (finish_epoch()) break;
    }
}

bool Run::finish_epoch() {
    const Config& c = configured();
    if (phase_ < AFTER_EPOCH_COMPLETED) {
        if (phase_ == AFTER_EPOCH_STARTED) {
            if (c.engine.dataloader_iter.get(engine_) == Py_None)
                call_method(c.methods.setup_engine);
            iter_counter_ = initial_iter_counter();
            c.engine.init_iter.set(engine_, Py_None);
            note_iterations_before_epoch();
            restarted_ = false;
        }
        iterations();
        phase_ = EPOCH_END;
        bool progressed = !equals(c.state.iteration.get(state()), epoch_first_iteration_.ptr());
        stalled_epochs_ = progressed ? 0 : stalled_epochs_ + 1;
        set_epoch_time(c.epoch_completed_key, now_seconds() - epoch_started_);
        if (!equals_text(c.engine.should_terminate_single_epoch.get(engine_),
                         "skip_epoch_completed")) {
            if (fire(EPOCH_COMPLETED))
                set_epoch_time(c.epoch_completed_key, now_seconds() - epoch_started_);
        }
        if (truthy(c.engine.should_terminate_single_epoch.get(engine_)))
            c.engine.should_terminate_single_epoch.set(engine_, Py_False);
        check(AFTER_EPOCH_COMPLETED);
    }
    if (logs_info_) call_support(c.support.log_epoch_completed);
    phase_ = AFTER_STARTED;
    // See _pyloop._finish_epoch: a max_iters run that keeps getting no batch ends; any other
    // run fails after NO_PROGRESS_EPOCHS_LIMIT such epochs.
    if (stalled_epochs_ < c.stalled_epochs_limit) return false;
    if (c.state.max_epochs.get(state()) == Py_None) return true;
    if (stalled_epochs_ >= c.no_progress_epochs_limit)
        raise_message(PyExc_RuntimeError, c.messages.no_progress);
    return false;
}

void Run::iterations() {
    const Config& c = configured();
    try {
        for (;;) {
            if (phase_ == AFTER_ITERATION_COMPLETED) {
                if (epoch_is_over()) return;
            }
            if (phase_ == AFTER_DATALOADER_STOP_ITERATION) {
                setup_dataloader_iter();
                restarted_ = true;
            }
            if (phase_ <= AFTER_EPOCH_STARTED || phase_ == AFTER_ITERATION_COMPLETED ||
                phase_ == AFTER_DATALOADER_STOP_ITERATION) {
                PyObject* s = state();
                c.state.batch.set(s, Py_None);
                bool after_stop = last_event_is_stop_iteration();
                if (!after_stop && c.state.dataloader.get(state()) != Py_None) {
                    fire(GET_BATCH_STARTED);
                    check(AFTER_GET_BATCH_STARTED);
                } else {
                    phase_ = AFTER_GET_BATCH_STARTED;
                }
            }
            if (phase_ == AFTER_GET_BATCH_STARTED) {
                if (!next_batch()) return;
                if (phase_ != AFTER_GET_BATCH_COMPLETED) continue;  // the data restarted
            }
            if (phase_ == AFTER_GET_BATCH_COMPLETED) {
                ++iter_counter_;
                restarted_ = false;
                increment(c.state.iteration, &iteration_);
                fire(ITERATION_STARTED);
                check(AFTER_ITERATION_STARTED);
            }
            if (phase_ == AFTER_ITERATION_STARTED) {
                let_others_run();
                py::object process =
                    py::reinterpret_borrow<py::object>(c.engine.process_function.get(engine_));
                py::object batch = py::reinterpret_borrow<py::object>(c.state.batch.get(state()));
                PyObject* args[] = {engine_, batch.ptr()};
                double started = timings_ ? now_seconds() : 0.0;
                PyObject* result = PyObject_Vectorcall(process.ptr(), args, 2, nullptr);
                if (timings_) timings_->step.add(now_seconds() - started);  // a raise included
                py::object output = steal_or_throw(result);
                c.state.output.set(state(), output.ptr());
                fire(ITERATION_COMPLETED);
                check(AFTER_ITERATION_COMPLETED);
            }
        }
    } catch (const TerminateEpoch&) {
        fire_terminate_single_epoch();
        setup_dataloader_iter();
    } catch (const py::error_already_set& error) {
        route_exception(error, __LINE__);
    }
}

// After an iteration: true when the epoch has had its epoch_length iterations; terminates the
// run at max_iters. Python's `==` for anything but ints.
bool Run::epoch_is_over() {
    const Config& c = configured();
    py::object held = held_state();  // an __eq__ may rebind engine.state
    PyObject* s = held.ptr();
    long long bound = 0;
    PyObject* epoch_length = c.state.epoch_length.get(s);
    if (epoch_length != Py_None &&
        (exact_int(epoch_length, bound) ? iter_counter_ == bound
                                        : equals(iter_counter_, epoch_length)))
        return true;
    PyObject* max_iters = c.state.max_iters.get(s);
    if (max_iters == Py_None) return false;
    PyObject* iteration = c.state.iteration.get(s);
    bool reached = iteration == iteration_.object.ptr() && exact_int(max_iters, bound)
                       ? iteration_.value == bound
                       : equals(iteration, max_iters);
    if (!reached) return false;
    c.engine.should_terminate.set(engine_, Py_True);
    throw Terminate{};
}

bool Run::next_batch() {
    const Config& c = configured();
    py::object iterator = py::reinterpret_borrow<py::object>(c.engine.dataloader_iter.get(engine_));
    if (iterator.is_none()) raise_message(PyExc_RuntimeError, c.messages.iterator_removed);
    if (!PyIter_Check(iterator.ptr())) {
        PyErr_Format(PyExc_TypeError, "'%.100s' object is not an iterator",
                     Py_TYPE(iterator.ptr())->tp_name);
        throw py::error_already_set();
    }
    if (iterator.ptr() != counted_iterator_.ptr()) {
        counted_iterator_ = iterator;
        batches_drawn_ = 0;
    }
    double started = timings_ ? now_seconds() : 0.0;
    PyObject* batch = PyIter_Next(iterator.ptr());
    iterator = py::object();
    if (timings_ && batch != nullptr) timings_->data.add(now_seconds() - started);
    if (batch == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        py::object held = held_state();  // a handler or warning filter may rebind engine.state
        PyObject* s = held.ptr();
        if (c.state.epoch_length.get(s) == Py_None && !learn_epoch_length()) return false;
        if (restarted_) {
            if (!is_done()) call_support(c.support.warn_data_exhausted);
            return false;
        }
        if (c.state.dataloader.get(s) != Py_None) {
            fire(DATALOADER_STOP_ITERATION);
            check(AFTER_DATALOADER_STOP_ITERATION);
        } else {
            phase_ = AFTER_DATALOADER_STOP_ITERATION;
        }
        return true;
    }
    py::object owned = py::reinterpret_steal<py::object>(batch);
    ++batches_drawn_;
    py::object held = held_state();  // the old batch's __del__ may rebind engine.state
    PyObject* s = held.ptr();
    c.state.batch.set(s, owned.ptr());
    c.state.output.set(s, Py_None);
    if (c.state.dataloader.get(s) != Py_None) {
        fire(GET_BATCH_COMPLETED);
        check(AFTER_GET_BATCH_COMPLETED);
    } else {
        phase_ = AFTER_GET_BATCH_COMPLETED;
    }
    return true;
}

// See _pyloop._learn_epoch_length: one pass of the iterator is the epoch length.
bool Run::learn_epoch_length() {
    const Config& c = configured();
    py::object held = held_state();
    PyObject* s = held.ptr();
    if (batches_drawn_ == 0) {
        if (equals(0LL, c.state.iteration.get(s)))
            raise_message(PyExc_ValueError, c.messages.zero_size_data);
        // A one-shot iterator, used up.
        if (!is_done()) call_support(c.support.warn_data_exhausted);
        return false;
    }
    // An epoch that drew from two iterators (set_data() mid-epoch) counts its iterations.
    long long length = std::max(batches_drawn_, iter_counter_);
    c.state.epoch_length.set_int(s, length);
    PyObject* max_iters = c.state.max_iters.get(s);
    if (max_iters != Py_None) c.state.max_epochs.set(s, ceil_div(max_iters, length).ptr());
    return iter_counter_ < batches_drawn_;
}

// Looks for set_epoch once per data object: lists and most loaders have none, and pay nothing.
void Run::set_sampler_epoch() {
    const Config& c = configured();
    PyObject* data = c.state.dataloader.get(state());
    if (data != checked_dataloader_.ptr()) {
        checked_dataloader_ = py::reinterpret_borrow<py::object>(data);
        sampler_has_set_epoch_ = truthy(
            steal_or_throw(PyObject_CallOneArg(c.support.sampler_has_set_epoch, data)).ptr());
    }
    if (sampler_has_set_epoch_) call_support(c.support.set_sampler_epoch);
}

bool Run::is_done() {
    const Config& c = configured();
    py::object held = held_state();
    PyObject* s = held.ptr();
    if (!native_is_done_) {
        PyObject* args[] = {engine_, s};
        return truthy(
            steal_or_throw(PyObject_VectorcallMethod(c.methods.is_done, args,
                                                     2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr))
                .ptr());
    }
    // In C++ when every field is an int (or None for a bound); else Engine._is_done itself.
    long long iteration = 0;
    long long epoch = 0;
    std::optional<long long> max_iters;
    std::optional<long long> max_epochs;
    std::optional<long long> epoch_length;
    if (!(exact_int_at(c.state.iteration, s, iteration) && exact_int_at(c.state.epoch, s, epoch) &&
          bound_at(c.state.max_iters, s, max_iters) &&
          bound_at(c.state.max_epochs, s, max_epochs) &&
          bound_at(c.state.epoch_length, s, epoch_length))) {
        return truthy(steal_or_throw(PyObject_CallOneArg(c.support.base_is_done, s)).ptr());
    }
    if (max_iters && iteration >= *max_iters) return true;
    if (!max_epochs) return false;
    if (epoch_length &&
        static_cast<__int128>(iteration) >= static_cast<__int128>(*epoch_length) * *max_epochs)
        return true;
    return epoch >= *max_epochs;
}

// Built-in events are singletons, so identity decides for them; anything else a handler may
// have fired (a custom event, a string) is compared as Python compares it.
bool Run::last_event_is_stop_iteration() const {
    const Config& c = configured();
    PyObject* last = c.engine.last_event_name.get(engine_);
    PyObject* stop = c.events[DATALOADER_STOP_ITERATION];
    if (last == stop) return true;
    if (last == Py_None || Py_TYPE(last) == Py_TYPE(stop)) return false;
    return python_compare(last, stop, Py_EQ);
}

bool Run::fire(EventId id) {
    if (!timings_) return dispatch(id);
    double started = now_seconds();
    bool fired;
    try {
        fired = dispatch(id);
    } catch (...) {  // a firing that raised (or stopped the run) is counted too
        timings_->events[id].add(now_seconds() - started);
        throw;
    }
    timings_->events[id].add(now_seconds() - started);
    return fired;
}

bool Run::dispatch(EventId id) {
    const Config& c = configured();
    if (python_dispatch_) {
        py::handle(engine_).attr(c.methods.fire_event)(py::handle(c.events[id]));
        return true;
    }
    c.engine.last_event_name.set(engine_, c.events[id]);
    return dispatcher_.fire(id);
}

void Run::fire_terminate_single_epoch() {
    const Config& c = configured();
    py::dict kwargs;
    kwargs["iter_counter"] = iter_counter_;
    if (python_dispatch_) {
        py::handle(engine_).attr(c.methods.fire_event)(py::handle(c.events[TERMINATE_SINGLE_EPOCH]),
                                                       **kwargs);
        return;
    }
    c.engine.last_event_name.set(engine_, c.events[TERMINATE_SINGLE_EPOCH]);
    dispatcher_.fire(TERMINATE_SINGLE_EPOCH, kwargs.ptr());
}

void Run::setup_dataloader_iter() {
    const Config& c = configured();
    if (!native_setup_iter_) {
        call_method(c.methods.setup_dataloader_iter);
        return;
    }
    py::object held = held_state();
    PyObject* s = held.ptr();
    py::object dataloader = py::reinterpret_borrow<py::object>(c.state.dataloader.get(s));
    py::object iterator;
    if (dataloader.is_none()) {
        PyObject* length = c.state.epoch_length.get(s);
        PyObject* args[] = {Py_None, length};
        iterator = steal_or_throw(PyObject_Vectorcall(c.repeat, args, 2, nullptr));
    } else {
        iterator = steal_or_throw(PyObject_GetIter(dataloader.ptr()));
    }
    c.engine.dataloader_iter.set(engine_, iterator.ptr());
}

void Run::route_exception(const py::error_already_set& error, int line) {
    if (!error.matches(PyExc_Exception)) throw;  // BaseException: the run level routes it
    py::object exception = exception_with_traceback(error, "iterations", line);
    call_support(configured().support.log_iteration_error, exception.ptr());
    call_support(configured().support.handle_exception, exception.ptr());
}

// `engine.state.<slot> += 1`, in C++ for an int, else with Python's operator.
void Run::increment(const Slot& slot, WrittenInt* written) {
    PyObject* s = state();
    PyObject* value = slot.get(s);
    long long count = 0;
    bool known = written != nullptr && value == written->object.ptr();
    if (known) count = written->value;
    if ((known || exact_int(value, count)) && count < std::numeric_limits<long long>::max()) {
        if (written != nullptr) {
            slot.set_int(s, count + 1, *written);
        } else {
            slot.set_int(s, count + 1);
        }
        return;
    }
    // __iadd__ may run Python code that rebinds engine.state: the sum goes to this state, as
    // in Python.
    py::object held_state = py::reinterpret_borrow<py::object>(s);
    py::object held_value = py::reinterpret_borrow<py::object>(value);
    py::object one = steal_or_throw(PyLong_FromLong(1));
    py::object sum = steal_or_throw(PyNumber_InPlaceAdd(value, one.ptr()));
    slot.set(s, sum.ptr());
}

// `engine._init_iter or 0`.
// See _pyloop's twin: engine._iterations_before_epoch = state.iteration - iter_counter for an
// int iteration, else None (sink.ends_epoch then falls back to the iteration's remainder).
void Run::note_iterations_before_epoch() {
    const Config& c = configured();
    py::object held = held_state();
    PyObject* iteration = c.state.iteration.get(held.ptr());
    py::object before = py::none();
    if (PyLong_CheckExact(iteration)) {
        py::object done = steal_or_throw(PyLong_FromLongLong(iter_counter_));
        before = steal_or_throw(PyNumber_Subtract(iteration, done.ptr()));
    }
    if (PyObject_SetAttr(engine_, c.iterations_before_epoch, before.ptr()) < 0)
        throw py::error_already_set();
}

long long Run::initial_iter_counter() {
    PyObject* value = configured().engine.init_iter.get(engine_);
    if (!truthy(value)) return 0;
    long long count = 0;
    // Bounded, so that counting on from it cannot overflow.
    if (!exact_int(value, count) || count < 0 || count > (1LL << 62)) {
        PyErr_Format(PyExc_TypeError, "engine._init_iter should be an int >= 0, got %R", value);
        throw py::error_already_set();
    }
    return count;
}

void Run::call_support(PyObject* helper) {
    steal_or_throw(PyObject_CallOneArg(helper, engine_));
}

void Run::call_support(PyObject* helper, PyObject* arg) {
    PyObject* args[] = {engine_, arg};
    steal_or_throw(PyObject_Vectorcall(helper, args, 2, nullptr));
}

void Run::call_method(PyObject* name) {
    steal_or_throw(PyObject_CallMethodNoArgs(engine_, name));
}

void Run::set_epoch_time(PyObject* key, double seconds) {
    auto times = py::reinterpret_borrow<py::object>(configured().state.times.get(state()));
    py::object value = steal_or_throw(PyFloat_FromDouble(seconds));
    if (PyObject_SetItem(times.ptr(), key, value.ptr()) < 0) throw py::error_already_set();
}

}  // namespace ember
