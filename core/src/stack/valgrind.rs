//! Valgrind client requests, built only with `--cfg keel_valgrind` (`make test-valgrind`);
//! default builds contain none of this.
//!
//! A client request is valgrind's "special instruction sequence" on amd64: four rotates
//! of rdi by 3, 13, 61 and 51 bits (128 in all, so rdi is unchanged and the sequence is a
//! no-op on a real CPU), then `xchg rbx, rbx`, with rax pointing at six words (request,
//! five arguments) and rdx holding the default result. Under valgrind the sequence is
//! recognised, the request is served and its result is left in rdx. The constants are
//! those of valgrind.h and memcheck.h (`VG_USERREQ__STACK_REGISTER`,
//! `VG_USERREQ_TOOL_BASE('M','C') + 2` for `VALGRIND_MAKE_MEM_DEFINED`).
//!
//! Used for: fiber stacks registered while a fiber owns them (so memcheck treats a
//! switch as a change of stack, not as a frame of megabytes), and, in keel-linux, the
//! ranges the kernel filled through io_uring marked defined (memcheck does not see the
//! kernel's writes through the ring).
//!
//! A fiber stack inside the running thread's own stack (a `RegionStacks` region that is
//! a local array of a frame above the executor's) is not seen as a change of stack:
//! valgrind registers each thread's stack too, and looks for another registered stack
//! only when the stack pointer leaves the current one (`coregrind/m_stacks.c`), which a
//! switch to a nested stack never does. The switch is then taken for a frame pushed or
//! popped over the distance between the two stack pointers: the executor's frames are
//! marked inaccessible on the way into the fiber and undefined on the way back, and
//! memcheck reports reads of them (keel's asm switch and the ucontext switcher alike).
//! Stacks from mmap, the heap or static memory do not nest; the tests that nest one on
//! purpose are skipped under valgrind (`.ci/test-valgrind.sh`).

use core::arch::asm;

const STACK_REGISTER: usize = 0x1501;
const STACK_DEREGISTER: usize = 0x1502;
const MAKE_MEM_DEFINED: usize = 0x4d43_0002;

#[inline(always)]
fn request(req: usize, a1: usize, a2: usize) -> usize {
    let args: [usize; 6] = [req, a1, a2, 0, 0, 0];
    let mut result = 0usize;
    // SAFETY: on a real CPU the sequence only rotates rdi by 128 bits in all (a no-op
    // on its value) and swaps rbx with itself; under valgrind it reads the six words at
    // rax, which live on this frame for the whole asm block, and writes rdx. Flags are
    // clobbered (asm! assumes so unless `preserves_flags`).
    unsafe {
        asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") result,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

/// Registers `[lo, hi)` as a stack; returns valgrind's id for it (0 when not under valgrind).
pub fn stack_register(lo: *const u8, hi: *const u8) -> usize {
    request(STACK_REGISTER, lo as usize, hi as usize)
}

/// Forgets the stack `id` returned by [`stack_register`].
pub fn stack_deregister(id: usize) {
    request(STACK_DEREGISTER, id, 0);
}

/// Marks `[ptr, ptr + len)` as defined (written), as after the kernel filled it.
pub fn make_mem_defined(ptr: *const u8, len: usize) {
    request(MAKE_MEM_DEFINED, ptr as usize, len);
}
