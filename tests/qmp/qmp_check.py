#!/usr/bin/env python3
"""QMP checks run unchanged against Casemate and QEMU 7.2.

usage: qmp_check.py casemate|qemu BINARY PROBE_ELF SCRATCH_DIR [SCENARIO...]

Boots the probe guest on q35 with a QMP socket and drives it with QEMU's
own client library (qemu.qmp) and with raw JSON over the socket. Each
scenario prints `ok NAME`; any failed assertion ends the script with a
non-zero status and the reason. The VMM-specific part is only the
command line (`vm_argv`); every assertion is shared.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

from qemu.qmp import QMPClient  # PyPI qemu.qmp, QEMU's own client

KIND, BINARY, PROBE, SCRATCH = sys.argv[1:5]
SCENARIOS = sys.argv[5:] or ["commands", "hostile", "powerdown", "prelaunch", "hmp",
                              "quit-flush", "reset", "endpoints"]
BOOT_TIMEOUT = 60.0
# QEMU's socket chardev serves one client at a time (the next one waits
# in the backlog); Casemate serves several at once. Only the concurrent
# part of the checks depends on this.
CONCURRENT = KIND == "casemate"


def vm_argv(sock, append, extra=(), machine="q35"):
    if KIND == "casemate":
        base = [BINARY, "-M", machine, "-m", "128M", "-serial", "stdio"]
    else:
        base = [BINARY, "-enable-kvm", "-M", machine, "-m", "128M", "-nodefaults",
                "-nographic", "-serial", "stdio"]
    return base + ["-kernel", PROBE, "-append", append,
                   "-qmp", f"unix:{sock},server=on,wait=off", *extra]


class Vm:
    """The VMM process, its console lines, and its QMP socket path."""

    def __init__(self, name, append, extra=(), machine="q35"):
        self.sock = os.path.join(SCRATCH, f"{name}.sock")
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(vm_argv(self.sock, append, extra, machine),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not os.path.exists(self.sock):
            check(self.proc.poll() is None, f"{KIND} exited early: {self.stderr()}")
            check(time.monotonic() < deadline, "no QMP socket appeared")
            time.sleep(0.01)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.lines.append(None)
            self.cv.notify_all()

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def wait_line(self, pred, timeout=BOOT_TIMEOUT):
        """The first console line matching pred (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            i = 0
            while True:
                while i < len(self.lines):
                    line = self.lines[i]
                    check(line is not None, f"console ended without the line: {self.lines}")
                    if pred(line):
                        return line
                    i += 1
                left = deadline - time.monotonic()
                check(left > 0, f"timed out waiting for a console line: {self.lines[-5:]}")
                self.cv.wait(left)

    def counts(self):
        with self.cv:
            return [int(l.split("n=")[1]) for l in self.lines
                    if l and l.startswith("probe: count n=")]

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"{KIND} did not exit")

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def fail(why):
    print(f"FAIL [{KIND}]: {why}", flush=True)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


class Raw:
    """A QMP client on a plain socket: exact bytes in, JSON lines out."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        # Blocking connect: QEMU's backlog may be full of vanished clients
        # (a non-blocking one fails with EAGAIN then).
        self.s.connect(path)
        self.s.settimeout(20)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            check(chunk, "server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self):
        """The next message that is not an event."""
        while True:
            m = self.recv()
            if "event" not in m:
                return m

    def cmd(self, name, **kw):
        msg = {"execute": name}
        if kw.get("arguments") is not None:
            msg["arguments"] = kw["arguments"]
        if "id" in kw:
            msg["id"] = kw["id"]
        self.send(json.dumps(msg))
        return self.reply()

    def close(self):
        self.s.close()


def error_class(m):
    check("error" in m, f"expected an error, got {m}")
    check(set(m["error"]) == {"class", "desc"}, f"error shape {m}")
    check(isinstance(m["error"]["desc"], str) and m["error"]["desc"], f"error desc {m}")
    return m["error"]["class"]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_event(ev, name):
    check(ev["event"] == name, f"expected {name}, got {ev['event']}")
    ts = ev["timestamp"]
    check(set(ts) == {"seconds", "microseconds"}, f"timestamp shape {ts}")
    check(abs(ts["seconds"] - time.time()) < 60, f"timestamp {ts}")
    check(0 <= ts["microseconds"] < 1_000_000, f"timestamp {ts}")


async def client(path):
    c = QMPClient("qmp-check")
    await c.connect(path)
    return c


async def gone(c):
    """Disconnect a client whose VM has ended (the server closed first)."""
    try:
        await c.disconnect()
    except EOFError:
        pass


async def next_event(c, names, timeout=30):
    async def get():
        async for ev in c.events:
            if ev["event"] in names:
                return ev
    return await asyncio.wait_for(get(), timeout)


def negotiation(vm):
    r = Raw(vm.sock)
    g = r.recv()
    check(set(g) == {"QMP"}, f"greeting {g}")
    check(set(g["QMP"]) == {"version", "capabilities"}, f"greeting {g}")
    v = g["QMP"]["version"]
    check(set(v["qemu"]) == {"major", "minor", "micro"}, f"greeting version {v}")
    check(all(is_int(x) for x in v["qemu"].values()), f"greeting version {v}")
    check(isinstance(v["package"], str), f"greeting package {v}")
    check(isinstance(g["QMP"]["capabilities"], list), f"greeting caps {g}")
    # Nothing but qmp_capabilities before negotiation.
    m = r.cmd("query-status", id="early")
    check(error_class(m) == "CommandNotFound", f"before negotiation: {m}")
    check(m.get("id") == "early", f"id echoed: {m}")
    check(r.cmd("qmp_capabilities", id=1) == {"return": {}, "id": 1}, "negotiation")
    m = r.cmd("qmp_capabilities")
    check(error_class(m) == "CommandNotFound", f"second negotiation: {m}")
    m = r.cmd("no-such-command", id={"any": ["json", 1]})
    check(error_class(m) == "CommandNotFound", f"unknown command: {m}")
    check(m["id"] == {"any": ["json", 1]}, f"id echoed as given: {m}")
    m = r.cmd("query-status", arguments={"bogus": 1})
    check(error_class(m) == "GenericError", f"bad argument: {m}")
    r.send('{"arguments": {}}')
    check(error_class(r.reply()) == "GenericError", "request without execute")
    r.send('[1, 2]')
    check(error_class(r.reply()) == "GenericError", "request that is not an object")
    return r


async def commands():
    vm = Vm("commands", "probe=count lines=100000 period=20")
    try:
        vm.wait_line(lambda l: l.startswith("probe: count n="))
        raw = negotiation(vm)
        if not CONCURRENT:
            raw.close()
        c = await client(vm.sock)
        v = await c.execute("query-version")
        check(set(v) == {"qemu", "package"} and is_int(v["qemu"]["major"]), f"query-version {v}")
        cmds = await c.execute("query-commands")
        names = {x["name"] for x in cmds}
        for n in ["qmp_capabilities", "query-status", "stop", "cont", "system_reset",
                  "system_powerdown", "quit", "query-pci", "query-block", "query-memdev"]:
            check(n in names, f"query-commands lacks {n}")
        s = await c.execute("query-status")
        check(s["status"] == "running" and s["running"] is True, f"query-status {s}")
        check(isinstance(s["singlestep"], bool), f"query-status {s}")
        check(await c.execute("query-name") == {}, "query-name without -name")
        k = await c.execute("query-kvm")
        check(k == {"enabled": True, "present": True}, f"query-kvm {k}")
        cpus = await c.execute("query-cpus-fast")
        check(len(cpus) == 1, f"query-cpus-fast {cpus}")
        cpu = cpus[0]
        check(cpu["cpu-index"] == 0 and is_int(cpu["thread-id"]), f"cpu {cpu}")
        check(os.path.exists(f"/proc/{vm.proc.pid}/task/{cpu['thread-id']}"),
              f"thread-id {cpu['thread-id']} is not a thread of the VMM")
        check(isinstance(cpu["qom-path"], str) and cpu["target"] == "x86_64", f"cpu {cpu}")
        check({"socket-id", "core-id", "thread-id"} <= set(cpu["props"]), f"cpu props {cpu}")
        check(isinstance(await c.execute("query-block"), list), "query-block")
        pci = await c.execute("query-pci")
        check(len(pci) >= 1 and pci[0]["bus"] == 0, f"query-pci {pci}")
        devs = pci[0]["devices"]
        host = [d for d in devs if d["slot"] == 0 and d["function"] == 0]
        check(host and host[0]["class_info"]["class"] == 0x0600, f"host bridge {devs}")
        for d in devs:
            check(is_int(d["id"]["vendor"]) and is_int(d["id"]["device"]), f"pci id {d}")
        # Regions: the BARs with address, size and type (QEMU's shape).
        regions = [r for d in devs for r in d["regions"]]
        check(any(r["type"] == "memory" for r in regions), f"no memory BAR in {devs}")
        for r in regions:
            check(r["type"] in ("io", "memory") and all(is_int(r[k]) for k in ["bar", "address", "size"]),
                  f"pci region {r}")
            if r["type"] == "memory":
                check(isinstance(r["prefetch"], bool) and isinstance(r["mem_type_64"], bool),
                      f"pci region {r}")
        mem = await c.execute("query-memdev")
        check(len(mem) == 1 and mem[0]["size"] == 128 << 20, f"query-memdev {mem}")
        for key in ["merge", "dump", "prealloc", "share"]:
            check(isinstance(mem[0][key], bool), f"query-memdev {key}: {mem}")

        # stop: the counter does not advance until cont.
        await c.execute("stop")
        check_event(await next_event(c, {"STOP"}), "STOP")
        s = await c.execute("query-status")
        check(s == {"status": "paused", "running": False, "singlestep": False}, f"paused {s}")
        stopped = vm.counts()
        await asyncio.sleep(0.5)  # a measurement interval, not a synchronisation
        check(vm.counts() == stopped, f"the guest ran while stopped: {stopped[-1:]} -> {vm.counts()[-3:]}")
        await c.execute("cont")
        check_event(await next_event(c, {"RESUME"}), "RESUME")
        last = stopped[-1]
        vm.wait_line(lambda l: l == f"probe: count n={last + 2}", timeout=10)
        print(f"ok commands [{KIND}]", flush=True)

        await c.execute("quit")
        ev = await next_event(c, {"SHUTDOWN"})
        check_event(ev, "SHUTDOWN")
        check(ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, f"SHUTDOWN {ev}")
        if CONCURRENT:
            # The other client saw the same events, in order.
            seen = []
            while True:
                m = raw.recv()
                if "event" in m:
                    seen.append(m["event"])
                    if m["event"] == "SHUTDOWN":
                        break
            check(seen == ["STOP", "RESUME", "SHUTDOWN"], f"second client's events {seen}")
            raw.close()
        await gone(c)
        check(vm.wait_exit() == 0, f"quit: exit status {vm.proc.returncode}")
        # The unix socket goes with the VMM (QEMU removes it too).
        deadline = time.monotonic() + 10
        while os.path.exists(vm.sock):
            check(time.monotonic() < deadline, "the QMP socket stayed after exit")
            time.sleep(0.02)
        print(f"ok quit [{KIND}]", flush=True)
    finally:
        vm.kill()


def wait_fds(vm, want, timeout=10):
    deadline = time.monotonic() + timeout
    while vm.fds() != want:
        check(time.monotonic() < deadline, f"fds {vm.fds()} != {want} before the clients")
        time.sleep(0.02)


async def hostile():
    vm = Vm("hostile", "probe=count lines=100000 period=20")
    try:
        vm.wait_line(lambda l: l.startswith("probe: count n="))
        before = vm.fds()
        # A 1 MiB value and a 1 MiB line of garbage: errors, then the
        # connection still answers in order.
        bad = Raw(vm.sock)
        bad.recv()
        bad.cmd("qmp_capabilities")
        pad = "x" * (1 << 20)
        m = bad.cmd("query-status", arguments={"pad": pad})
        check(error_class(m) == "GenericError", f"1 MiB argument: {m}")
        bad.send(pad + "\n")
        bad.send('{"execute": "query-status", "id": "sync"}')
        while True:
            m = bad.recv()
            if m.get("id") == "sync":
                check(m["return"]["status"] == "running", f"after garbage: {m}")
                break
            if "event" not in m:
                check(error_class(m) == "GenericError", f"1 MiB garbage line: {m}")
        bad.send('{"execute": }\n')
        check(error_class(bad.reply()) == "GenericError", "invalid JSON")
        bad.send('{"execute": "query-status", "id": "sync2"}')
        check(bad.reply().get("id") == "sync2", "answers after invalid JSON")
        bad.close()
        # 100 clients connect and vanish, some in the middle of a command.
        for i in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.connect(vm.sock)
            if i % 3 == 1:
                s.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-st')
            elif i % 3 == 2:
                s.sendall(b'{"execute": "query-status"}')
            s.close()
        good = Raw(vm.sock)
        good.recv()
        good.cmd("qmp_capabilities")
        m = good.cmd("query-status")
        check(m["return"]["status"] == "running", f"VM after 100 clients: {m}")
        good.close()
        wait_fds(vm, before)
        n = vm.counts()[-1]
        vm.wait_line(lambda l: l.startswith("probe: count n=") and int(l.split("n=")[1]) > n + 1,
                     timeout=10)
        print(f"ok hostile [{KIND}] fds={before}", flush=True)
    finally:
        vm.kill()


async def powerdown():
    for machine in ["q35", "microvm"]:
        await powerdown_on(machine)


async def powerdown_on(machine):
    """pc/q35: the PM1 fixed power button; microvm: the GED."""
    vm = Vm(f"powerdown-{machine}", "probe=powerbtn", machine=machine)
    try:
        vm.wait_line(lambda l: "powerbtn state=armed" in l)
        c = await client(vm.sock)
        await c.execute("system_powerdown")
        check_event(await next_event(c, {"POWERDOWN", "SHUTDOWN"}), "POWERDOWN")
        ev = await next_event(c, {"SHUTDOWN"})
        check_event(ev, "SHUTDOWN")
        check(ev["data"] == {"guest": True, "reason": "guest-shutdown"}, f"SHUTDOWN {ev}")
        vm.wait_line(lambda l: l == "probe: done status=ok", timeout=5)
        await gone(c)
        check(vm.wait_exit() == 0, f"powerdown: exit status {vm.proc.returncode}")
        print(f"ok powerdown {machine} [{KIND}]", flush=True)
    finally:
        vm.kill()


async def prelaunch():
    vm = Vm("prelaunch", "probe=count lines=100000 period=20", ["-S"])
    try:
        c = await client(vm.sock)
        s = await c.execute("query-status")
        check(s == {"status": "prelaunch", "running": False, "singlestep": False}, f"-S: {s}")
        await asyncio.sleep(0.5)  # a measurement interval, not a synchronisation
        check(vm.counts() == [], f"the guest ran before cont: {vm.counts()[:3]}")
        await c.execute("cont")
        check_event(await next_event(c, {"RESUME"}), "RESUME")
        vm.wait_line(lambda l: l == "probe: count n=2")
        s = await c.execute("query-status")
        check(s["status"] == "running" and s["running"] is True, f"after cont: {s}")
        await c.execute("quit")
        await next_event(c, {"SHUTDOWN"})
        await gone(c)
        check(vm.wait_exit() == 0, "quit after -S")
        print(f"ok prelaunch [{KIND}]", flush=True)
    finally:
        vm.kill()


class Hmp:
    """A human monitor on a unix socket: send a line, read to the prompt."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.s.settimeout(20)
        self.banner = self.until_prompt()

    def until_prompt(self):
        buf = b""
        while not buf.endswith(b"(qemu) "):
            chunk = self.s.recv(65536)
            check(chunk, f"HMP closed: {buf!r}")
            buf += chunk
        return buf.decode(errors="replace")

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\n")
        return self.until_prompt()


async def hmp():
    sock = os.path.join(SCRATCH, "hmp.sock")
    vm = Vm("hmp", "probe=count lines=100000 period=20",
            ["-monitor", f"unix:{sock},server=on,wait=off"])
    try:
        vm.wait_line(lambda l: l.startswith("probe: count n="))
        h = Hmp(sock)
        check("monitor - type 'help' for more information" in h.banner, f"banner {h.banner!r}")
        check("VM status: running" in h.cmd("info status"), "info status")
        out = h.cmd("nosuchcommand")
        check("unknown command: 'nosuchcommand'" in out, f"unknown command: {out!r}")
        check("CPU #0: thread_id=" in h.cmd("info cpus"), "info cpus")
        out = h.cmd("info pci")
        check("Bus  0, device   0, function 0:" in out, f"info pci: {out!r}")
        check(" bit memory at 0x" in out and 'id ""' in out, f"info pci BARs: {out!r}")
        out = h.cmd("info version")
        check(any(c.isdigit() for c in out), f"info version: {out!r}")
        out = h.cmd("help")
        for c in ["cont", "stop", "quit", "system_reset", "system_powerdown", "info"]:
            check(c in out, f"help lacks {c}: {out!r}")
        h.cmd("stop")
        check("VM status: paused" in h.cmd("info status"), "info status after stop")
        stopped = vm.counts()
        await asyncio.sleep(0.5)  # a measurement interval, not a synchronisation
        check(vm.counts() == stopped, "the guest ran while stopped (HMP)")
        h.cmd("cont")
        last = stopped[-1]
        vm.wait_line(lambda l: l == f"probe: count n={last + 2}", timeout=10)
        h.s.sendall(b"quit\n")
        check(vm.wait_exit() == 0, f"HMP quit: exit status {vm.proc.returncode}")
        print(f"ok hmp [{KIND}]", flush=True)
    finally:
        vm.kill()


async def quit_flush():
    """quit right after a guest write completed (no guest flush): the
    qcow2 image is consistent and holds the write."""
    img = os.path.join(SCRATCH, "quit.qcow2")
    r = subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "64M"], capture_output=True)
    check(r.returncode == 0, f"qemu-img create: {r.stderr!r}")
    vm = Vm("quitflush", "probe=blk wait_after_write=1",
            ["-drive", f"file={img},format=qcow2,if=virtio"])
    try:
        line = vm.wait_line(lambda l: "blk write_done" in l)
        lba = int(line.split("lba=")[1].split()[0])
        c = await client(vm.sock)
        await c.execute("quit")
        ev = await next_event(c, {"SHUTDOWN"})
        check(ev["data"]["reason"] == "host-qmp-quit", f"SHUTDOWN {ev}")
        await gone(c)
        check(vm.wait_exit() == 0, f"quit: exit status {vm.proc.returncode}")
        r = subprocess.run(["qemu-img", "check", img], capture_output=True)
        check(r.returncode == 0, f"qemu-img check after quit: {r.stdout!r} {r.stderr!r}")
        raw = os.path.join(SCRATCH, "quit.raw")
        r = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw],
                           capture_output=True)
        check(r.returncode == 0, f"qemu-img convert: {r.stderr!r}")
        with open(raw, "rb") as f:
            f.seek(lba * 512)
            sector = f.read(512)
        want = bytes((lba * 7 + 1 + i) & 0xff for i in range(512))
        check(sector == want, f"the completed write to LBA {lba} is not in the image after quit")
        print(f"ok quit-flush [{KIND}]", flush=True)
    finally:
        vm.kill()


async def reset():
    """system_reset sent as soon as the socket is there (before or while
    the guest boots): a RESET event, and the guest boots again."""
    vm = Vm("reset", "probe=count lines=100000 period=20")
    try:
        c = await client(vm.sock)
        await c.execute("system_reset")
        ev = await next_event(c, {"RESET"})
        check_event(ev, "RESET")
        check(ev["data"] == {"guest": False, "reason": "host-qmp-system-reset"}, f"RESET {ev}")
        vm.wait_line(lambda l: l.startswith("probe: count n="))
        # A reset may cut a line: the boot line is looked for anywhere.
        boots = lambda: sum(1 for l in vm.lines if l and "probe: boot entry=" in l)
        with vm.cv:
            first = boots()
        check(first >= 1, f"the guest did not boot after the reset: {vm.lines[:5]}")
        # A reset while the guest runs: it boots once more.
        await c.execute("system_reset")
        check_event(await next_event(c, {"RESET"}), "RESET")
        deadline = time.monotonic() + 30
        with vm.cv:
            while boots() <= first:
                left = deadline - time.monotonic()
                check(left > 0, "no boot after the second reset")
                vm.cv.wait(left)
        await c.execute("quit")
        await next_event(c, {"SHUTDOWN"})
        await gone(c)
        check(vm.wait_exit() == 0, "quit after reset")
        print(f"ok reset [{KIND}]", flush=True)
    finally:
        vm.kill()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def endpoints():
    """QMP on tcp and on -chardev socket + -mon, next to the unix -qmp."""
    port = free_port()
    mon = os.path.join(SCRATCH, "mon.sock")
    vm = Vm("endpoints", "probe=count lines=100000 period=20",
            ["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off",
             "-chardev", f"socket,id=m1,path={mon},server=on,wait=off",
             "-mon", "chardev=m1,mode=control"])
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not os.path.exists(mon):
            check(time.monotonic() < deadline, "no -chardev socket")
            time.sleep(0.01)
        tcp = QMPClient("tcp")
        await tcp.connect(("127.0.0.1", port))
        chardev = await client(mon)
        for c in (tcp, chardev):
            s = await c.execute("query-status")
            check(s["status"] in ("running", "prelaunch", "paused"), f"query-status {s}")
        await tcp.execute("stop")
        check_event(await next_event(chardev, {"STOP"}), "STOP")
        await chardev.execute("quit")
        for c in (tcp, chardev):
            ev = await next_event(c, {"SHUTDOWN"})
            check(ev["data"]["reason"] == "host-qmp-quit", f"SHUTDOWN {ev}")
            await gone(c)
        check(vm.wait_exit() == 0, "quit over -mon")
        print(f"ok endpoints [{KIND}]", flush=True)
    finally:
        vm.kill()


async def main():
    for s in SCENARIOS:
        await {"commands": commands, "hostile": hostile, "powerdown": powerdown,
               "prelaunch": prelaunch, "hmp": hmp, "quit-flush": quit_flush, "reset": reset,
               "endpoints": endpoints}[s]()


asyncio.run(main())
