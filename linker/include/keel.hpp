/* keel.hpp: header-only C++17 RAII over keel.h (hand-written; MIT OR Apache-2.0).
 *
 * keel::executor and keel::task own a keel object allocated once by keel (the
 * keel_*_create forms) and destroy it in their destructor; they move, never copy. Calls
 * that fail throw keel::error carrying the keel_result. keel::task::attach takes any
 * callable `int64_t(keel_task)` by pointer: it must outlive the run. An exception that
 * escapes the callable is caught before it reaches keel (nothing unwinds through keel's
 * frames) and the run ends with -ENOTRECOVERABLE. */
#ifndef KEEL_HPP
#define KEEL_HPP

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "keel.h"

namespace keel {

/** A failed keel call: code() is the negative keel_result. */
class error : public std::runtime_error {
  public:
    explicit error(keel_result code)
        : std::runtime_error(std::string("keel: ") + keel_strerror(code)), code_(code) {}
    keel_result code() const noexcept { return code_; }

  private:
    keel_result code_;
};

/** Returns r, or throws keel::error if it is an error. */
inline keel_result check(keel_result r) {
    if (KEEL_IS_ERROR(r)) throw error(r);
    return r;
}

/** An executor; destroyed (its tasks cancelled and released) with this object. */
class executor {
  public:
    explicit executor(const keel_executor_attr *attr = nullptr) { check(keel_executor_create(attr, &h_)); }
    executor(executor &&o) noexcept : h_(std::exchange(o.h_, keel_executor{})) {}
    executor &operator=(executor &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, keel_executor{});
        }
        return *this;
    }
    executor(const executor &) = delete;
    executor &operator=(const executor &) = delete;
    ~executor() { reset(); }

    keel_executor get() const noexcept { return h_; }
    /** Items done; 0 if the timeout passed with none (ETIME is not an error here). */
    std::size_t run(std::size_t max_items = 64, uint64_t timeout_ns = KEEL_NO_TIMEOUT) {
        keel_result r = keel_executor_run(h_, max_items, timeout_ns);
        return r == -ETIME ? 0 : static_cast<std::size_t>(check(r));
    }
    std::size_t attached() const { return static_cast<std::size_t>(check(keel_executor_attached(h_))); }
    /** Runs until no task is attached. */
    void drain() {
        while (attached() > 0) run();
    }

  private:
    void reset() noexcept {
        if (h_.storage != nullptr) keel_executor_destroy(h_);
        h_ = keel_executor{};
    }
    keel_executor h_{};
};

/** A task, reusable for any number of runs; destroyed with this object. */
class task {
  public:
    explicit task(const keel_task_attr *attr = nullptr) { check(keel_task_create(attr, &h_)); }
    task(task &&o) noexcept : h_(std::exchange(o.h_, keel_task{})) {}
    task &operator=(task &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, keel_task{});
        }
        return *this;
    }
    task(const task &) = delete;
    task &operator=(const task &) = delete;
    ~task() { reset(); }

    keel_task get() const noexcept { return h_; }

    /** Attaches `*f` (a callable `int64_t(keel_task)`, which must outlive the run). */
    template <class F>
    void attach(executor &ex, F *f) {
        check(keel_task_attach(ex.get(), h_, &trampoline<F>, static_cast<void *>(f)));
    }
    void cancel() { check(keel_task_cancel(h_)); }
    /** The latest run's result, as keel_task_result returns it (errors not thrown). */
    keel_result result() const noexcept { return keel_task_result(h_); }

  private:
    template <class F>
    static int64_t trampoline(keel_task t, void *user) noexcept {
        try {
            return (*static_cast<F *>(user))(t);
        } catch (...) {
            return -ENOTRECOVERABLE;
        }
    }
    void reset() noexcept {
        if (h_.storage != nullptr) keel_task_destroy(h_);
        h_ = keel_task{};
    }
    keel_task h_{};
};

/** Calls from inside a running task's function. */
namespace this_task {
inline void yield(keel_task t) { check(keel_task_yield(t)); }
inline void sleep_for_ns(keel_task t, uint64_t ns) { check(keel_task_suspend_for(t, ns)); }
}  // namespace this_task

}  // namespace keel

#endif /* KEEL_HPP */
