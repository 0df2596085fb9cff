// keel.hpp's wait primitives from C++17: a semaphore handed between two tasks, an event
// that releases a waiter, a channel between a producer and a consumer, a join of another
// task's result, poll on a pipe, try_* forms, moves, and keel::error from a closed one.
#include <unistd.h>
#include <poll.h>

#include <cstdio>
#include <cstdlib>

#include "keel.hpp"

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                          \
        }                                                                          \
    } while (0)

int main() {
    // An executor with a ring (poll goes through it); exits 77 where io_uring is off.
    keel_executor_attr attr = {};
    attr.ring_entries = 32;
    keel::executor ex = [&] {
        try {
            return keel::executor(&attr);
        } catch (const keel::error &e) {
            std::fprintf(stderr, "wait: SKIPPED: io_uring is not available here (%s)\n", e.what());
            std::exit(77);
        }
    }();
    keel::task a, b, c, d;

    // Semaphore: one permit handed back and forth 10 times.
    keel::semaphore sem(1);
    int order[20];
    int n = 0;
    auto turn = [&](keel_task t, int who) -> int64_t {
        for (int i = 0; i < 10; i++) {
            sem.acquire(t);
            order[n++] = who;
            keel::this_task::yield(t);
            sem.release();
        }
        return who;
    };
    auto one = [&](keel_task t) { return turn(t, 1); };
    auto two = [&](keel_task t) { return turn(t, 2); };
    a.attach(ex, &one);
    b.attach(ex, &two);
    ex.drain();
    CHECK(n == 20 && sem.available() == 1);
    for (int i = 1; i < 20; i++) CHECK(order[i] != order[i - 1]);  // strict hand-off
    CHECK(sem.try_acquire() && !sem.try_acquire());
    sem.release();

    // Event and channel: the consumer waits for the event, then sums what comes.
    keel::event go;
    keel::channel ch(2);
    auto consumer = [&](keel_task t) -> int64_t {
        go.wait(t);
        uint64_t sum = 0;
        for (int i = 0; i < 5; i++) sum += ch.recv(t);
        return static_cast<int64_t>(sum);
    };
    auto producer = [&](keel_task t) -> int64_t {
        keel::this_task::yield(t);
        go.set();
        for (uint64_t v = 1; v <= 5; v++) ch.send(t, v);  // capacity 2: it waits
        return 0;
    };
    // A third task joins the consumer and polls a pipe that has data.
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK(write(fds[1], "x", 1) == 1);
    auto joiner = [&](keel_task t) -> int64_t {
        keel_result got = keel::this_task::join(t, c);
        int ready = keel::this_task::poll(t, fds[0], POLLIN);
        return (ready & POLLIN) ? got : -1;
    };
    c.attach(ex, &consumer);
    a.attach(ex, &producer);
    d.attach(ex, &joiner);
    ex.drain();
    CHECK(c.result() == 15 && d.result() == 15);
    CHECK(go.is_set() && ch.size() == 0);
    go.reset_event();
    CHECK(!go.is_set());
    uint64_t v = 0;
    CHECK(ch.try_send(7) && ch.try_send(8) && !ch.try_send(9));
    CHECK(ch.try_recv(&v) && v == 7);

    // Moves keep one owner; a closed semaphore throws keel::error(-EPIPE).
    keel::semaphore moved = std::move(sem);
    CHECK(sem.get().storage == nullptr);
    moved.close();
    bool threw = false;
    try {
        moved.try_acquire();
    } catch (const keel::error &e) {
        threw = e.code() == -EPIPE;
    }
    CHECK(threw);
    close(fds[0]);
    close(fds[1]);
    std::printf("wait: semaphore, event, channel, join and poll through keel.hpp\n");
    return 0;
}
