/* keel.hpp: header-only C++17 RAII over keel.h (hand-written; MIT OR Apache-2.0).
 *
 * keel::executor and keel::task own a keel object allocated once by keel (the
 * keel_*_create forms) and destroy it in their destructor; they move, never copy. Calls
 * that fail throw keel::error carrying the keel_result. keel::task::attach takes any
 * callable `int64_t(keel_task)` by pointer: it must outlive the run. An exception that
 * escapes the callable is caught before it reaches keel (nothing unwinds through keel's
 * frames) and the run ends with -ENOTRECOVERABLE. keel::semaphore, keel::event and
 * keel::channel own a wait primitive the same way; keel::this_task has the calls a task's
 * function makes (yield, sleep, join, poll). */
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

/** Owns one keel object of handle type H (semaphore, event, channel) and destroys it
 * with Destroy; moves, never copies. */
template <class H, keel_result (*Destroy)(H)>
class owned {
  public:
    owned(owned &&o) noexcept : h_(std::exchange(o.h_, H{})) {}
    owned &operator=(owned &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, H{});
        }
        return *this;
    }
    owned(const owned &) = delete;
    owned &operator=(const owned &) = delete;
    ~owned() { reset(); }
    H get() const noexcept { return h_; }

  protected:
    owned() = default;
    H h_{};

  private:
    void reset() noexcept {
        if (h_.storage != nullptr) Destroy(h_);
        h_ = H{};
    }
};

/** A counting semaphore between tasks (keel_semaphore_*); any thread may release. */
class semaphore : public owned<keel_semaphore, keel_semaphore_destroy> {
  public:
    explicit semaphore(uint64_t permits) { check(keel_semaphore_create(permits, &h_)); }
    /** Takes one permit, suspending task `t` while there is none. */
    void acquire(keel_task t) { check(keel_semaphore_acquire(t, h_)); }
    /** Takes one permit if one is free now. */
    bool try_acquire() {
        keel_result r = keel_semaphore_try_acquire(h_);
        if (r == -EAGAIN) return false;
        check(r);
        return true;
    }
    void release(uint64_t n = 1) { check(keel_semaphore_release(h_, n)); }
    void close() { check(keel_semaphore_close(h_)); }
    uint64_t available() const { return static_cast<uint64_t>(check(keel_semaphore_available(h_))); }
};

/** An event: set wakes every waiting task, reset clears it (keel_event_*). */
class event : public owned<keel_event, keel_event_destroy> {
  public:
    explicit event(bool set = false) { check(keel_event_create(set, &h_)); }
    void wait(keel_task t) { check(keel_event_wait(t, h_)); }
    void set() { check(keel_event_set(h_)); }
    void reset_event() { check(keel_event_reset(h_)); }
    bool is_set() const { return check(keel_event_is_set(h_)) != 0; }
};

/** A bounded channel of uint64_t values (keel_channel_*). */
class channel : public owned<keel_channel, keel_channel_destroy> {
  public:
    explicit channel(std::size_t capacity) { check(keel_channel_create(capacity, &h_)); }
    /** Sends, suspending task `t` while the channel is full. */
    void send(keel_task t, uint64_t value) { check(keel_channel_send(t, h_, value)); }
    /** Receives, suspending task `t` while the channel is empty. */
    uint64_t recv(keel_task t) {
        uint64_t v = 0;
        check(keel_channel_recv(t, h_, &v));
        return v;
    }
    /** Sends if there is room now; false if not. */
    bool try_send(uint64_t value) {
        keel_result r = keel_channel_try_send(h_, value);
        if (r == -EAGAIN) return false;
        check(r);
        return true;
    }
    /** Receives into `*out` if a value is there now; false if not. */
    bool try_recv(uint64_t *out) {
        keel_result r = keel_channel_try_recv(h_, out);
        if (r == -EAGAIN) return false;
        check(r);
        return true;
    }
    void close() { check(keel_channel_close(h_)); }
    std::size_t size() const { return static_cast<std::size_t>(check(keel_channel_len(h_))); }
};

/** Calls from inside a running task's function. */
namespace this_task {
inline void yield(keel_task t) { check(keel_task_yield(t)); }
inline void sleep_for_ns(keel_task t, uint64_t ns) { check(keel_task_suspend_for(t, ns)); }
/** Waits for `other`'s run to end: keel_task_join's value, not thrown (the awaited run's
 * result, or the join's own error: see keel.h; -ETIME, -EDEADLK and the like come from
 * the join, a negative value may also be the other run's own). */
inline keel_result join(keel_task t, const task &other, uint64_t timeout_ns = KEEL_NO_TIMEOUT) noexcept {
    return keel_task_join(t, other.get(), timeout_ns);
}
/** Waits until `fd` is ready for `events` (poll(2) bits); returns the ready bits. */
inline int poll(keel_task t, int fd, int events, int64_t timeout_ns = -1) {
    return static_cast<int>(check(keel_poll(t, fd, events, timeout_ns)));
}
}  // namespace this_task

}  // namespace keel

#endif /* KEEL_HPP */
