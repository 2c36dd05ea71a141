#include "pybind11.hpp"

#include "loop.hpp"

#include <frameobject.h>

#include <chrono>

namespace ember {

double now_seconds() {
    using clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC, as time.perf_counter on Linux
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

namespace {

constexpr long long NONE = -1;  // an optional counter that is None

bool truthy(PyObject* value) {
    if (value == Py_False || value == Py_None) return false;
    if (value == Py_True) return true;
    int result = PyObject_IsTrue(value);
    if (result < 0) throw py::error_already_set();
    return result != 0;
}

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

[[noreturn]] void raise_message(PyObject* type, const char* support_name) {
    py::object message = py::handle(configured().support).attr(support_name);
    PyErr_SetObject(type, message.ptr());
    throw py::error_already_set();
}

}  // namespace

Run::Run(PyObject* engine) : engine_(engine), dispatcher_(engine, iteration_) {
    const Config& c = configured();
    if (!PyObject_TypeCheck(engine, c.engine_type))
        throw py::type_error("run_loop() needs an ember.engine.Engine");
    py::handle support(c.support);
    python_dispatch_ = support.attr("fires_through_engine")(py::handle(engine)).cast<bool>();
    native_is_done_ = !support.attr("is_done_overridden")(py::handle(engine)).cast<bool>();
    native_setup_iter_ =
        !support.attr("setup_dataloader_iter_overridden")(py::handle(engine)).cast<bool>();
    logs_info_ = support.attr("logs_info")(py::handle(engine)).cast<bool>();
    set_sampler_epoch_ = py::handle(engine).attr("set_sampler_epoch").cast<bool>();
    profiler_ = py::handle(engine).attr("_profiler");
    if (!profiler_.is_none()) {
        timings_ = std::make_unique<Timings>();
        dispatcher_.time_handlers(timings_.get());
    }

    py::object point = py::reinterpret_borrow<py::object>(c.engine.resume_point.get(engine));
    c.engine.resume_point.set(engine, Py_None);
    if (point.is_none()) {
        c.engine.should_terminate.set(engine, Py_False);
        c.engine.should_terminate_single_epoch.set(engine, Py_False);
        c.engine.should_interrupt.set(engine, Py_False);
        set_epoch_time(c.epoch_completed_key, 0.0);
        set_epoch_time(c.completed_key, 0.0);
        run_started_ = now_seconds();
        return;
    }
    auto fields = point.cast<py::tuple>();
    if (fields.size() != 9) throw py::value_error("engine._resume_point is malformed");
    phase_ = fields[0].cast<int>();
    iter_counter_ = fields[1].cast<long long>();
    restarted_ = fields[2].cast<bool>();
    run_started_ = fields[3].cast<double>();
    epoch_started_ = fields[4].cast<double>();
    epoch_first_iteration_ = fields[5].cast<long long>();
    stalled_epochs_ = fields[6].cast<long long>();
    counted_iterator_ = fields[7];
    batches_drawn_ = fields[8].cast<long long>();
}

void run_loop(PyObject* engine) {
    try {
        Run(engine).run();
    } catch (const py::error_already_set& error) {
        if (error.trace()) throw;
        // Raised before or outside the routed part of the loop (a malformed resume point, say)
        raise_exception(exception_with_traceback(error, "run_loop", __LINE__));
    } catch (const py::builtin_exception& error) {  // pybind11's own (a failed cast, say)
        error.set_error();
        raise_exception(exception_with_traceback(py::error_already_set(), "run_loop", __LINE__));
    }
}

PyObject* Run::state() {
    PyObject* state = configured().engine.state.get(engine_);
    if (state == checked_state_.ptr()) return state;
    if (!PyObject_TypeCheck(state, configured().state_type)) {
        PyErr_Format(PyExc_TypeError, "engine.state should be an ember.engine.State, got %.100s",
                     Py_TYPE(state)->tp_name);
        throw py::error_already_set();
    }
    checked_state_ = py::reinterpret_borrow<py::object>(state);
    return state;
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
            raise_message(PyExc_RuntimeError, "TERMINATE_EPOCH_TOO_EARLY");
        }
        complete();
    } catch (const Interrupted&) {
        return;
    } catch (const py::error_already_set& error) {
        configured().engine.dataloader_iter.set(engine_, Py_None);
        py::object exception = exception_with_traceback(error, "loop", __LINE__);
        call_support("log_run_error", exception.ptr());
        call_support("handle_exception", exception.ptr());
    }
    configured().engine.dataloader_iter.set(engine_, Py_None);
}

void Run::complete() {
    const Config& c = configured();
    set_epoch_time(c.completed_key, now_seconds() - run_started_);
    if (!equals_text(c.engine.should_terminate.get(engine_), "skip_completed")) {
        if (fire(COMPLETED)) set_epoch_time(c.completed_key, now_seconds() - run_started_);
    }
    if (logs_info_) call_support("log_run_finished");
}

void Run::check(Phase reached) {
    const Config& c = configured();
    phase_ = reached;
    PyObject* terminate = c.engine.should_terminate.get(engine_);
    PyObject* terminate_epoch = c.engine.should_terminate_single_epoch.get(engine_);
    PyObject* interrupt = c.engine.should_interrupt.get(engine_);
    if (terminate == Py_False && terminate_epoch == Py_False && interrupt == Py_False) return;
    if (truthy(terminate)) throw Terminate{};
    if (truthy(terminate_epoch)) throw TerminateEpoch{};
    if (truthy(interrupt)) {
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
        c.state.epoch.set_int(state(), c.state.epoch.get_int(state()) + 1);
        if (set_sampler_epoch_) set_sampler_epoch();
        epoch_started_ = now_seconds();
        epoch_first_iteration_ = c.state.iteration.get_int(state());
        fire(EPOCH_STARTED);
        check(AFTER_EPOCH_STARTED);
        if (finish_epoch()) break;
    }
}

bool Run::finish_epoch() {
    const Config& c = configured();
    if (phase_ < AFTER_EPOCH_COMPLETED) {
        if (phase_ == AFTER_EPOCH_STARTED) {
            if (c.engine.dataloader_iter.get(engine_) == Py_None) call_method("_setup_engine");
            iter_counter_ = c.engine.init_iter.get_optional_int(engine_, 0);
            c.engine.init_iter.set(engine_, Py_None);
            restarted_ = false;
        }
        iterations();
        phase_ = EPOCH_END;
        bool progressed = c.state.iteration.get_int(state()) != epoch_first_iteration_;
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
    if (logs_info_) call_support("log_epoch_completed");
    phase_ = AFTER_STARTED;
    // See _pyloop._finish_epoch: a max_iters run that keeps getting no batch ends.
    return c.state.max_epochs.get(state()) == Py_None && stalled_epochs_ >= c.stalled_epochs_limit;
}

void Run::iterations() {
    const Config& c = configured();
    try {
        for (;;) {
            if (phase_ == AFTER_ITERATION_COMPLETED) {
                PyObject* s = state();
                long long epoch_length = c.state.epoch_length.get_optional_int(s, NONE);
                if (epoch_length != NONE && iter_counter_ == epoch_length) return;
                long long max_iters = c.state.max_iters.get_optional_int(s, NONE);
                if (max_iters != NONE && c.state.iteration.get_int(s, iteration_) == max_iters) {
                    c.engine.should_terminate.set(engine_, Py_True);
                    throw Terminate{};
                }
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
                PyObject* s = state();
                c.state.iteration.set_int(s, c.state.iteration.get_int(s, iteration_) + 1,
                                          iteration_);
                fire(ITERATION_STARTED);
                check(AFTER_ITERATION_STARTED);
            }
            if (phase_ == AFTER_ITERATION_STARTED) {
                // Python runs signal handlers only between bytecodes; a step written in C
                // would otherwise never let Ctrl-C through. The GIL is held here.
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                // Nor would a C step let other threads run (one calling terminate(), say):
                // the interpreter hands the GIL over only between bytecodes, so hand it over
                // here now and then. Safe: nothing touches a Python object while it is released.
                if (++steps_since_gil_release_ == GIL_RELEASE_INTERVAL) {
                    steps_since_gil_release_ = 0;
                    py::gil_scoped_release let_other_threads_run;
                }
                py::object process =
                    py::reinterpret_borrow<py::object>(c.engine.process_function.get(engine_));
                py::object batch = py::reinterpret_borrow<py::object>(c.state.batch.get(state()));
                PyObject* args[] = {engine_, batch.ptr()};
                double started = timings_ ? now_seconds() : 0.0;
                py::object output =
                    steal_or_throw(PyObject_Vectorcall(process.ptr(), args, 2, nullptr));
                if (timings_) timings_->step.add(now_seconds() - started);
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

bool Run::next_batch() {
    const Config& c = configured();
    py::object iterator = py::reinterpret_borrow<py::object>(c.engine.dataloader_iter.get(engine_));
    if (iterator.is_none()) raise_message(PyExc_RuntimeError, "ITERATOR_REMOVED");
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
        PyObject* s = state();
        if (c.state.epoch_length.get(s) == Py_None && !learn_epoch_length()) return false;
        if (restarted_) {
            if (!is_done()) call_support("warn_data_exhausted");
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
    PyObject* s = state();
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
    PyObject* s = state();
    if (batches_drawn_ == 0) {
        if (c.state.iteration.get_int(s, iteration_) == 0)
            raise_message(PyExc_ValueError, "ZERO_SIZE_DATA");
        if (!is_done()) call_support("warn_data_exhausted");  // a one-shot iterator, used up
        return false;
    }
    c.state.epoch_length.set_int(s, batches_drawn_);
    long long max_iters = c.state.max_iters.get_optional_int(s, NONE);
    if (max_iters != NONE)
        c.state.max_epochs.set_int(s, (max_iters + batches_drawn_ - 1) / batches_drawn_);
    return iter_counter_ < batches_drawn_;
}

// Looks for set_epoch once per data object: lists and most loaders have none, and pay nothing.
void Run::set_sampler_epoch() {
    const Config& c = configured();
    PyObject* data = c.state.dataloader.get(state());
    if (data != checked_dataloader_.ptr()) {
        checked_dataloader_ = py::reinterpret_borrow<py::object>(data);
        sampler_has_set_epoch_ =
            py::handle(c.support).attr("sampler_has_set_epoch")(checked_dataloader_).cast<bool>();
    }
    if (sampler_has_set_epoch_) call_support("set_sampler_epoch");
}

bool Run::is_done() {
    const Config& c = configured();
    PyObject* s = state();
    if (!native_is_done_) return py::handle(engine_).attr("_is_done")(py::handle(s)).cast<bool>();
    long long iteration = c.state.iteration.get_int(s);
    long long max_iters = c.state.max_iters.get_optional_int(s, NONE);
    if (max_iters != NONE && iteration >= max_iters) return true;
    long long max_epochs = c.state.max_epochs.get_optional_int(s, NONE);
    if (max_epochs == NONE) return false;
    long long epoch_length = c.state.epoch_length.get_optional_int(s, NONE);
    if (epoch_length != NONE && iteration >= epoch_length * max_epochs) return true;
    return c.state.epoch.get_int(s) >= max_epochs;
}

// Built-in events are singletons, so identity decides for them; anything else a handler may
// have fired (a custom event, a string) is compared as Python compares it.
bool Run::last_event_is_stop_iteration() const {
    const Config& c = configured();
    PyObject* last = c.engine.last_event_name.get(engine_);
    PyObject* stop = c.events[DATALOADER_STOP_ITERATION];
    if (last == stop) return true;
    if (last == Py_None || Py_TYPE(last) == Py_TYPE(stop)) return false;
    int equal = PyObject_RichCompareBool(last, stop, Py_EQ);
    if (equal < 0) throw py::error_already_set();
    return equal != 0;
}

bool Run::fire(EventId id) {
    if (!timings_) return dispatch(id);
    double started = now_seconds();
    bool fired = dispatch(id);
    timings_->events[id].add(now_seconds() - started);
    return fired;
}

bool Run::dispatch(EventId id) {
    const Config& c = configured();
    if (python_dispatch_) {
        py::handle(engine_).attr("_fire_event")(py::handle(c.events[id]));
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
        py::handle(engine_).attr("_fire_event")(py::handle(c.events[TERMINATE_SINGLE_EPOCH]),
                                                **kwargs);
        return;
    }
    c.engine.last_event_name.set(engine_, c.events[TERMINATE_SINGLE_EPOCH]);
    dispatcher_.fire(TERMINATE_SINGLE_EPOCH, nullptr, kwargs.ptr());
}

void Run::setup_dataloader_iter() {
    const Config& c = configured();
    if (!native_setup_iter_) {
        call_method("_setup_dataloader_iter");
        return;
    }
    PyObject* s = state();
    PyObject* dataloader = c.state.dataloader.get(s);
    py::object iterator;
    if (dataloader == Py_None) {
        PyObject* length = c.state.epoch_length.get(s);
        PyObject* args[] = {Py_None, length};
        iterator = steal_or_throw(PyObject_Vectorcall(c.repeat, args, 2, nullptr));
    } else {
        iterator = steal_or_throw(PyObject_GetIter(dataloader));
    }
    c.engine.dataloader_iter.set(engine_, iterator.ptr());
}

void Run::route_exception(const py::error_already_set& error, int line) {
    if (!error.matches(PyExc_Exception)) throw;  // BaseException: the run level routes it
    py::object exception = exception_with_traceback(error, "iterations", line);
    call_support("log_iteration_error", exception.ptr());
    call_support("handle_exception", exception.ptr());
}

void Run::call_support(const char* name) {
    py::handle(configured().support).attr(name)(py::handle(engine_));
}

void Run::call_support(const char* name, PyObject* arg) {
    py::handle(configured().support).attr(name)(py::handle(engine_), py::handle(arg));
}

void Run::call_method(const char* name) {
    py::handle(engine_).attr(name)();
}

void Run::set_epoch_time(PyObject* key, double seconds) {
    PyObject* times = configured().state.times.get(state());
    py::object value = steal_or_throw(PyFloat_FromDouble(seconds));
    if (PyObject_SetItem(times, key, value.ptr()) < 0) throw py::error_already_set();
}

}  // namespace ember
