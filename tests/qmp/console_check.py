#!/usr/bin/env python3
"""Typing into Casemate's console through a pty.

usage: console_check.py CASEMATE

The probe's echo mode prints each line it reads from COM1. Checks that
keys reach the guest, the terminal is raw while the VM runs and restored
on every exit path (Ctrl-A x, the guest powering off, SIGTERM), and that
QEMU's escapes work: Ctrl-A h (help), Ctrl-A c (monitor and back), Ctrl-A x
(quit, exit 0). Prints `ok NAME` per scenario; fails with the reason.
"""

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

BINARY = sys.argv[1]


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


class Session:
    def __init__(self, append="probe=echo"):
        self.master, self.slave = pty.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([BINARY, "-append", append], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave)
        self.out = b""

    def expect(self, text, timeout=30):
        """Wait until `text` has appeared in the output (bounded)."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.out:
            left = deadline - time.monotonic()
            check(left > 0, f"no {text!r} in the console: {self.out[-400:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.out += os.read(self.master, 4096)
                except OSError:
                    fail(f"console closed before {text!r}: {self.out[-400:]!r}")
        # Later expectations look only at newer output.
        self.out = self.out[self.out.index(want) + len(want):]

    def type(self, keys):
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    def finish(self):
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("casemate did not exit")
        after = termios.tcgetattr(self.slave)
        check(after == self.before, f"terminal not restored: {self.before} -> {after}")
        os.close(self.master)
        os.close(self.slave)
        return code


def raw_while_running(s):
    attrs = termios.tcgetattr(s.slave)
    lflag = attrs[3]
    check(not lflag & termios.ICANON and not lflag & termios.ECHO,
          "the terminal is not raw while the VM runs")


def echo_and_ctrl_a_x():
    s = Session()
    s.expect("probe: echo state=ready")
    raw_while_running(s)
    s.type("hello\r")
    s.expect("probe: echo line=hello")
    # A Ctrl-A sent through as one byte, then a line longer than the FIFO.
    s.type("a\x01\x01b\r")
    s.expect('probe: echo line="a\\x01b"')
    s.type("x" * 200 + "\r")
    s.expect("probe: echo line=" + "x" * 200)
    s.type("\x01h")
    s.expect("C-a x    exit emulator")
    s.type("\x01x")
    s.expect("QEMU: Terminated")
    check(s.finish() == 0, "Ctrl-A x: exit status is not 0")
    print("ok ctrl-a-x", flush=True)


def monitor_switch():
    s = Session()
    s.expect("probe: echo state=ready")
    s.type("\x01c")
    s.expect("(qemu) ")
    s.type("info status\r")
    s.expect("VM status: running")
    s.type("nosuch\r")
    s.expect("unknown command: 'nosuch'")
    s.type("\x01c")
    s.type("quit\r")
    s.expect("probe: echo line=quit")
    s.expect("probe: done status=ok")
    check(s.finish() == 0, "guest power-off: exit status is not 0")
    print("ok monitor-switch", flush=True)


def sigterm():
    s = Session()
    s.expect("probe: echo state=ready")
    raw_while_running(s)
    s.proc.send_signal(signal.SIGTERM)
    s.expect("terminating on signal 15")
    check(s.finish() == 0, "SIGTERM: exit status is not 0")
    print("ok sigterm", flush=True)


echo_and_ctrl_a_x()
monitor_switch()
sigterm()
