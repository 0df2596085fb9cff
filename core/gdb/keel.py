# keel's GDB support: commands `keel tasks`, `keel bt ID`, `keel stats` and pretty
# printers for keel's executors, task handles and stack pools.
#
# Loaded by itself from the binary's .debug_gdb_scripts section (keel-core embeds it
# with #![debugger_visualizer], keel-ffi with a #[used] static) once gdb trusts the
# binary's directory:
#     add-auto-load-safe-path /path/to/target
# or by hand with `source core/gdb/keel.py`.
#
# Everything is read through the debugger descriptor `keel_debug` (keel-core's
# exec/debug.rs): a #[repr(C)] block of field offsets and byte codes with the registry
# of live executors in it, so the commands work on release builds, whose debug info has
# no type layouts. The descriptor's version is checked.
import re
import struct

import gdb

LAYOUT_VERSION = 2
# KeelDebug up to `executors`: magic, version, ptr_size, SchedLayout (22 u32),
# TaskLayout (17 u32), FiberLayout (6 u32), state codes, kind codes, slots, unlisted,
# reserved.
DESC_FMT = "<8sII22I17I6I12s4sIII"
# keel-core's DriverDebug (driver_debug.rs): kind, fd, sq and cq entries, op slots, a
# pointer to the count of operations holding a slot.
DRIVER_FMT = "<16siIIIQ"
STATES = ["idle", "attached", "ready", "running", "suspended(timer)", "suspended(io)",
          "suspended(wait)", "suspended(sq-slot)", "cancelling", "draining", "completed"]
KINDS = ["future", "fiber", "custom"]
PRIOS = ["high", "normal", "low"]
# glibc x86_64 ucontext_t: uc_mcontext.gregs[REG_*] (keel-linux's ucontext switcher).
UC_GREGS = {"r12": 72, "r13": 80, "r14": 88, "r15": 96, "rbp": 120, "rbx": 128, "rsp": 160, "rip": 168}


def _read(addr, n):
    return bytes(gdb.selected_inferior().read_memory(addr, n))


def _u8(a):
    return _read(a, 1)[0]


def _u32(a):
    return struct.unpack("<I", _read(a, 4))[0]


def _u64(a):
    return struct.unpack("<Q", _read(a, 8))[0]


def _symbol_address(name):
    """The address of a symbol, from the ELF symbol table (no debug info needed)."""
    text = gdb.execute("info address " + name, to_string=True)
    for word in text.replace(".", " ").split():
        if word.startswith("0x"):
            return int(word, 16)
    raise gdb.GdbError("keel: no symbol %s: is keel-core linked into this program?" % name)


class Layout:
    """The parsed descriptor."""

    def __init__(self):
        base = _symbol_address("keel_debug")
        size = struct.calcsize(DESC_FMT)
        v = struct.unpack(DESC_FMT, _read(base, size))
        if v[0] != b"keel-dbg":
            raise gdb.GdbError("keel: keel_debug at 0x%x is not keel's descriptor" % base)
        if v[1] != LAYOUT_VERSION:
            raise gdb.GdbError("keel: descriptor version %d, this script knows %d: use the script "
                               "of the keel this program was built with" % (v[1], LAYOUT_VERSION))
        s = v[3:25]
        self.owned, self.ready, self.attached, self.running = s[0:4]
        self.stats = s[4:11]
        self.stack_stats = s[11]
        self.times = s[12:16]
        self.list_head, self.list_len, self.list_size, self.links_next = s[16:20]
        self.driver, driver_size = s[20:22]
        if driver_size != struct.calcsize(DRIVER_FMT):
            raise gdb.GdbError("keel: DriverDebug is %d bytes, this script reads %d"
                               % (driver_size, struct.calcsize(DRIVER_FMT)))
        t = v[25:42]
        (self.t_state, self.t_cpu, self.t_io, self.t_vt, self.vt_kind, self.t_id, self.t_name,
         self.t_owned, self.t_initiated) = t[0:9]
        self.t_stats = t[9:12]
        self.t_body = t[12]
        self.t_times = t[13:17]
        self.f_base, self.f_size, self.f_state, self.f_fresh, self.f_started, self.f_regs = v[42:48]
        self.state_codes = {c: STATES[i] for i, c in enumerate(v[48][:len(STATES)])}
        self.kind_codes = {c: KINDS[i] for i, c in enumerate(v[49][:len(KINDS)])}
        self.slots, self.unlisted = v[50], v[51]
        self.registry = base + size

    def executors(self):
        out = []
        for i in range(self.slots):
            p = _u64(self.registry + 8 * i)
            if p:
                out.append(p)
        return out

    def list_items(self, lst, next_off, limit=1 << 20):
        """Header pointers of a keel List at `lst` whose links are at `next_off`."""
        p = _u64(lst + self.list_head)
        while p and limit:
            yield p
            p = _u64(p + next_off + self.links_next)
            limit -= 1


class Task:
    def __init__(self, lay, hdr):
        self.hdr = hdr
        self.id = _u32(hdr + lay.t_id)
        name_ptr, name_len = _u64(hdr + lay.t_name), _u64(hdr + lay.t_name + 8)
        self.name = _read(name_ptr, min(name_len, 256)).decode("utf-8", "replace") if name_len else ""
        self.state = lay.state_codes.get(_u8(hdr + lay.t_state), "?")
        self.cpu = PRIOS[_u8(hdr + lay.t_cpu)] if _u8(hdr + lay.t_cpu) < 3 else "?"
        self.io = PRIOS[_u8(hdr + lay.t_io)] if _u8(hdr + lay.t_io) < 3 else "?"
        vt = _u64(hdr + lay.t_vt)
        self.kind = lay.kind_codes.get(_u8(vt + lay.vt_kind), "?") if vt else "-"
        self.in_flight = _u64(hdr + lay.t_initiated + lay.list_len)
        self.resumptions = _u64(hdr + lay.t_stats[2])
        self.times = [_u64(hdr + o) for o in lay.t_times]
        self.stack = None
        self.started = False
        self.regs = None
        if self.kind in ("fiber", "custom"):
            body = hdr + lay.t_body
            fstate = _u8(body + lay.f_state)
            if fstate in (lay.f_fresh, lay.f_started):  # before: no stack yet; after: finished
                base, size = _u64(body + lay.f_base), _u64(body + lay.f_size)
                self.stack = (base, base + size)
            self.started = fstate == lay.f_started
            self.regs = body + lay.f_regs

    def saved(self):
        """The registers the fiber resumes with, or None (running, not started, future)."""
        if not self.started or self.state in ("running", "completed", "idle"):
            return None
        if self.kind == "fiber":
            # AsmRegs.sp -> [resume address, rbx, rbp]; outside the switch's asm block the
            # stack pointer is 24 bytes above (arch/x86_64.rs, "Stack diagrams").
            sp = _u64(self.regs)
            return {"rip": _u64(sp), "rbx": _u64(sp + 8), "rbp": _u64(sp + 16), "rsp": sp + 24}
        ctx = _u64(self.regs)
        return {r: _u64(ctx + off) for r, off in UC_GREGS.items()}

    def stack_used(self):
        if not self.stack:
            return None
        sp = None
        regs = self.saved()
        if regs:
            sp = regs["rsp"]
        elif self.state == "running":
            sp = _running_sp(self.stack)
        if sp is None or not self.stack[0] <= sp <= self.stack[1]:
            return None
        return self.stack[1] - sp

    def line(self, accounting=False):
        acct = ""
        if accounting:
            acct = " ticks running=%d suspended=%d ready_wait=%d longest_run=%d" % tuple(self.times)
        stack = ""
        if self.stack:
            used = self.stack_used()
            stack = " stack 0x%x-0x%x used %s" % (self.stack[0], self.stack[1],
                                                 "-" if used is None else str(used))
        return "task %d %r %s cpu=%s io=%s %s io_in_flight=%d resumed=%d%s%s" % (
            self.id, self.name, self.state, self.cpu, self.io, self.kind, self.in_flight,
            self.resumptions, stack, acct)


def _running_sp(stack):
    """The stack pointer of the thread whose innermost frame is on `stack`, if any."""
    thread, frame = gdb.selected_thread(), gdb.selected_frame()
    try:
        for t in gdb.selected_inferior().threads():
            t.switch()
            sp = int(gdb.newest_frame().read_register("rsp"))
            if stack[0] <= sp <= stack[1]:
                return sp
    finally:
        thread.switch()
        frame.select()
    return None


def _tasks(lay, sched):
    return [Task(lay, h) for h in lay.list_items(sched + lay.owned, lay.t_owned)]


def _fdinfo(fd):
    """The kernel's /proc/PID/fdinfo/FD of the inferior as a dict, or None (a core file,
    another machine, a closed descriptor)."""
    pid = gdb.selected_inferior().pid
    if not pid or fd < 0:
        return None
    try:
        with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if value.isdigit():
            out[key.strip()] = int(value)
    return out


def _driver_summary(lay, sched):
    """The driver's line: its kind, its ring's fill as the kernel reports it (SQ entries
    written and not yet consumed, CQ entries posted and not yet reaped) and operations
    holding a slot."""
    kind, fd, sq, cq, slots, in_flight = struct.unpack(DRIVER_FMT, _read(sched + lay.driver,
                                                                       struct.calcsize(DRIVER_FMT)))
    kind = kind.rstrip(b"\0").decode("ascii", "replace") or "unnamed"
    parts = ["driver %s" % kind]
    info = _fdinfo(fd)
    if info and "SqTail" in info and "CqTail" in info:
        sq_fill = (info["SqTail"] - info["SqHead"]) & 0xffffffff
        cq_fill = (info["CqTail"] - info["CqHead"]) & 0xffffffff
        parts.append("ring fd %d sq %d/%d cq %d/%d" % (fd, sq_fill, sq, cq_fill, cq))
    elif kind == "epoll":
        # keel's epoll engine: its queues live in the process, not in a kernel ring.
        parts.append("epoll fd %d, engine sq %d cq %d entries" % (fd, sq, cq))
    elif sq or cq:
        parts.append("ring fd %d sq -/%d cq -/%d (no /proc/PID/fdinfo to read the fill from)"
                     % (fd, sq, cq))
    if slots:
        used = _u64(in_flight) if in_flight else None
        parts.append("op slots %s/%d" % ("-" if used is None else used, slots))
    return ", ".join(parts)


def _exec_summary(lay, sched):
    n = _u64(sched + lay.attached)
    running = "running" if _u8(sched + lay.running) else "idle"
    st = [_u64(sched + o) for o in lay.stats]
    return "executor 0x%x: %d attached, %s, resumed %d, completed %d, io in flight %d" % (
        sched, n, running, st[0], st[1], st[4] - st[5])


class KeelCommand(gdb.Command):
    """keel's debugging commands: keel tasks, keel bt ID, keel stats."""

    def __init__(self):
        super().__init__("keel", gdb.COMMAND_USER, prefix=True)


class KeelTasks(gdb.Command):
    """List every task of every live executor: id, name, state, CPU and I/O priority,
switcher kind, i/o in flight, resumptions, and a fiber's stack range and bytes used."""

    def __init__(self):
        super().__init__("keel tasks", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        lay = Layout()
        execs = lay.executors()
        if not execs:
            print("keel: no live executor")
        for sched in execs:
            print(_exec_summary(lay, sched))
            accounting = bool(_u8(sched + lay.times[0]))
            for t in _tasks(lay, sched):
                print("  " + t.line(accounting))
        if lay.unlisted:
            print("keel: %d more executors were not listed (the registry was full)" % lay.unlisted)


class KeelBt(gdb.Command):
    """keel bt ID: the backtrace of suspended fiber task ID, unwound from its saved
registers. gdb's view moves onto the fiber's stack for the backtrace and back; the
process is not resumed."""

    def __init__(self):
        super().__init__("keel bt", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        try:
            want = int(arg.split()[0], 0)
        except (ValueError, IndexError):
            raise gdb.GdbError("usage: keel bt ID (a task id from `keel tasks`)")
        lay = Layout()
        for sched in lay.executors():
            for t in _tasks(lay, sched):
                if t.id == want:
                    return self.show(t)
        raise gdb.GdbError("keel: no task %d in a live executor" % want)

    def show(self, t):
        if t.state == "running":
            print("task %d is running: its frames are on the thread running it (bt there)" % t.id)
            return
        regs = t.saved()
        if regs is None:
            raise gdb.GdbError("keel: task %d (%s, %s) has no suspended stack" % (t.id, t.kind, t.state))
        print("task %d %r %s, on %s's stack:" % (t.id, t.name, t.state, t.kind))
        gdb.newest_frame().select()
        saved = {r: int(gdb.parse_and_eval("$" + r)) for r in regs}
        try:
            for r, v in regs.items():
                gdb.execute("set $%s = %d" % (r, v))
            text = gdb.execute("bt", to_string=True)
        finally:
            for r, v in saved.items():
                gdb.execute("set $%s = %d" % (r, v))
            gdb.newest_frame().select()
        # The fiber's bottom frame (shown as a signal frame) names its resumer through a
        # link that is stale while the fiber is suspended: stop there.
        for line in text.splitlines():
            print(line)
            if "<signal handler called>" in line:
                print("   (the fiber's bottom frame: it is suspended, so no resumer is above it)")
                break


class KeelStats(gdb.Command):
    """Statistics of every live executor: tasks per priority and state, counters, i/o
in flight, the stack pool, accounting when on."""

    def __init__(self):
        super().__init__("keel stats", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        lay = Layout()
        for sched in lay.executors():
            print(_exec_summary(lay, sched))
            print("  " + _driver_summary(lay, sched))
            st = [_u64(sched + o) for o in lay.stats]
            print("  resumed %d completed %d timers_fired %d inbox_taken %d io_submitted %d "
                  "io_completed %d parks %d" % tuple(st))
            ready = [_u64(sched + lay.ready + i * lay.list_size + lay.list_len) for i in range(3)]
            print("  ready high %d normal %d low %d" % tuple(ready))
            by = {}
            for t in _tasks(lay, sched):
                key = (t.cpu, t.state)
                by[key] = by.get(key, 0) + 1
            for (cpu, state), n in sorted(by.items()):
                print("  tasks cpu=%s %s: %d" % (cpu, state, n))
            ss = [_u64(sched + lay.stack_stats + 8 * i) for i in range(6)]
            print("  stacks created %d reused %d released %d high_water %d in_use %d spares %d"
                  % tuple(ss))
            if _u8(sched + lay.times[0]):
                print("  accounting ticks: tasks %d parked %d in_run %d"
                      % tuple(_u64(sched + o) for o in lay.times[1:]))


class ExecutorPrinter:
    """keel_core::exec::executor::Executor<..> (debug builds: types known)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        lay = Layout()
        sched = int(self.val["sched"].address)
        return "%s, %d tasks; %s" % (_exec_summary(lay, sched), len(_tasks(lay, sched)),
                                     _driver_summary(lay, sched))


class TaskHandlePrinter:
    """keel_core::task::TaskHandle."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        hdr = int(self.val["hdr"]["pointer"])
        return Task(Layout(), hdr).line()


class StackPoolPrinter:
    """keel_core::stack::pool::StackPool."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        stats = self.val["stats"]["value"]["value"]
        return "stack pool: " + ", ".join("%s %d" % (f, int(stats[f])) for f in
                                          ("created", "reused", "in_use", "spares", "high_water"))


def _cell(val, field):
    return val[field]["value"]["value"]


class IoStatusPrinter:
    """keel_core::io_status::block::IoStatus: an i/o status block (debug builds)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        task = _u64(int(self.val["task"].address))  # Option<NonNull<Header>>: null is None
        owner = ""
        if task:
            owner = ", task %d" % Task(Layout(), task).id
        short = lambda v: re.sub(r"\b[a-z_][a-z0-9_]*::", "", str(v))  # module paths off
        return "io status: %s, op %s, result %s%s" % (
            short(_cell(self.val, "state")), short(_cell(self.val, "op")), short(_cell(self.val, "result")), owner)


def _lookup(val):
    name = str(val.type.strip_typedefs().unqualified())
    if name.startswith("keel_core::exec::executor::Executor<"):
        return ExecutorPrinter(val)
    if name == "keel_core::task::TaskHandle":
        return TaskHandlePrinter(val)
    if name == "keel_core::io_status::block::IoStatus":
        return IoStatusPrinter(val)
    if name == "keel_core::stack::pool::StackPool":
        return StackPoolPrinter(val)
    return None


KeelCommand()
KeelTasks()
KeelBt()
KeelStats()
_objfile = gdb.current_objfile()
(_objfile.pretty_printers if _objfile is not None else gdb.pretty_printers).append(_lookup)
