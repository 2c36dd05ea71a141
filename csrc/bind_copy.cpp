// stream_copy(destination, source): the byte copy that an asynchronous checkpoint's snapshot
// takes on the training thread (python/ember/handlers/checkpoint.py).
//
// A snapshot copies each tensor once and does not read the copy back before the writer thread
// serialises it, so the copy is bound by memory bandwidth. For one tensor (a few MB to a few
// hundred), glibc's memcpy stays below its non-temporal threshold (a fraction of the L3 cache)
// and uses ordinary stores, which first read every destination line into the cache. Streaming
// stores skip that read and the cache, and reading four pages side by side keeps more DRAM
// pages open at once: 269 MB in 16 tensors took 41 ms with memcpy and 25 ms this way on the
// machine of docs/benchmark-checkpoint.md.
#include "pybind11.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ember {
namespace {

// A contiguous buffer of a Python object, released on scope exit. PyBUF_SIMPLE asks the
// exporter for one run of bytes: an object that cannot give one (a strided view) raises.
class Bytes {
public:
    Bytes(py::handle object, bool writable, const char* argument) {
        int flags = PyBUF_SIMPLE | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(object.ptr(), &view_, flags) != 0) {
            py::error_already_set cause;
            std::string what = std::string(argument) + " should be a contiguous" +
                               (writable ? ", writable" : "") + " buffer, got " +
                               Py_TYPE(object.ptr())->tp_name;
            py::raise_from(cause, PyExc_TypeError, what.c_str());
            throw py::error_already_set();
        }
    }
    Bytes(const Bytes&) = delete;
    Bytes& operator=(const Bytes&) = delete;
    ~Bytes() { PyBuffer_Release(&view_); }

    char* data() const { return static_cast<char*>(view_.buf); }
    std::size_t size() const { return static_cast<std::size_t>(view_.len); }

private:
    Py_buffer view_{};
};

#if defined(__SSE2__)
constexpr std::size_t kPage = 4096;
constexpr std::size_t kPagesAtOnce = 4;
constexpr std::size_t kLine = 64;

// One cache line from src to the 16-byte aligned dst, with streaming stores.
inline void stream_line(char* dst, const char* src) {
    for (std::size_t part = 0; part < kLine; part += 16) {
        __m128i value = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + part));
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + part), value);
    }
}

void copy_bytes(char* dst, const char* src, std::size_t size) {
    std::size_t head = (kLine - reinterpret_cast<std::uintptr_t>(dst) % kLine) % kLine;
    if (head >= size) {
        std::memcpy(dst, src, size);
        return;
    }
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    size -= head;
    constexpr std::size_t group = kPage * kPagesAtOnce;
    std::size_t groups = size / group;
    for (std::size_t g = 0; g < groups; ++g, dst += group, src += group)
        for (std::size_t offset = 0; offset < kPage; offset += kLine)
            for (std::size_t page = 0; page < kPagesAtOnce; ++page)
                stream_line(dst + page * kPage + offset, src + page * kPage + offset);
    _mm_sfence();  // streaming stores are weakly ordered: visible before the writer thread reads
    std::memcpy(dst, src, size - groups * group);
}
#else
void copy_bytes(char* dst, const char* src, std::size_t size) {
    std::memcpy(dst, src, size);
}
#endif

void stream_copy(py::handle destination, py::handle source) {
    Bytes to(destination, /*writable=*/true, "destination");
    Bytes from(source, /*writable=*/false, "source");
    if (to.size() != from.size())
        throw py::value_error("destination holds " + std::to_string(to.size()) +
                              " bytes and source " + std::to_string(from.size()) +
                              ": they should be the same size");
    std::uintptr_t to_start = reinterpret_cast<std::uintptr_t>(to.data());
    std::uintptr_t from_start = reinterpret_cast<std::uintptr_t>(from.data());
    if (to_start < from_start + from.size() && from_start < to_start + to.size()) {
        std::memmove(to.data(), from.data(), to.size());  // overlapping: no streaming order
        return;
    }
    // The GIL stays held: no Python thread can free or resize either buffer's memory meanwhile
    // (an exporter such as a ctypes array over a tensor's storage does not pin it).
    copy_bytes(to.data(), from.data(), to.size());
}

}  // namespace

void bind_copy(py::module_& m) {
    m.def("stream_copy", &stream_copy, py::arg("destination"), py::arg("source"),
          "Copy the bytes of buffer ``source`` into the writable buffer ``destination`` of the "
          "same size, with streaming stores (a snapshot's copy, not read back soon).");
}

}  // namespace ember
