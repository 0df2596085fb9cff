// keel.hpp from C++17: RAII executor and tasks, lambdas as task functions, an exception
// caught before it reaches keel, keel::error from a failed call, moves.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "keel.hpp"

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                          \
        }                                                                          \
    } while (0)

int main() {
    keel::executor ex;
    std::vector<keel::task> tasks;
    for (int i = 0; i < 3; i++) tasks.emplace_back();

    int total = 0;
    auto counts = [&total](keel_task t) -> int64_t {
        for (int i = 0; i < 3; i++) {
            keel::this_task::yield(t);
            total++;
        }
        keel::this_task::sleep_for_ns(t, 100000);
        return total;
    };
    auto throws = [](keel_task t) -> int64_t {
        keel::this_task::yield(t);
        throw std::runtime_error("thrown inside a task");
    };
    tasks[0].attach(ex, &counts);
    tasks[1].attach(ex, &counts);
    tasks[2].attach(ex, &throws);
    ex.drain();
    CHECK(total == 6);
    CHECK(tasks[0].result() >= 3 && tasks[1].result() == 6);
    CHECK(tasks[2].result() == -ENOTRECOVERABLE);

    // A failed call throws keel::error with its code.
    bool threw = false;
    try {
        keel::this_task::yield(tasks[0].get());  // not inside the task
    } catch (const keel::error &e) {
        threw = e.code() == -KEEL_ENOTINTASK;
    }
    CHECK(threw);

    // Moves keep one owner; the moved-from object destroys nothing.
    keel::task moved = std::move(tasks[0]);
    CHECK(tasks[0].get().storage == nullptr);
    moved.attach(ex, &counts);
    ex.drain();
    CHECK(total == 9);
    keel::executor ex2 = std::move(ex);
    CHECK(ex.get().storage == nullptr && ex2.attached() == 0);
    std::printf("raii: 4 runs through keel.hpp, one exception caught at the boundary\n");
    return 0;
}
