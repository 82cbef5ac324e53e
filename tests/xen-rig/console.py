#!/usr/bin/env python3
"""Serial console driver of the Xen rig (stdlib only).

  console.py run SOCK TIMEOUT CMD   type CMD into the dom0 shell behind the QEMU serial socket SOCK,
                                    print its output (stdout+stderr) and exit with its status
                                    (124 on timeout, 125 if the console cannot be reached)
  console.py wait LOG TIMEOUT TEXT  wait until TEXT appears in LOG (exit 0) or TIMEOUT s pass (124)

The command runs as `( CMD\n) </dev/null >FILE 2>&1` (a subshell: no job notices, no state kept) in dom0's interactive bash and its output is
printed between two markers made unique per call, so echoed input, prompts and interleaved
(XEN)/kernel messages never count as output. The serial line drops characters when the machine
is loaded, so the end marker (with the exit status) is sent three times: one intact copy is enough. One client at a time: callers hold a lock per socket.
"""
import os
import re
import socket
import sys
import time

NOISE = re.compile(r"^(\(XEN\)|\[\s*\d+\.\d+\]|\(d\d+\))")


def run(sock_path, timeout, cmd):
    tag = "%x%x" % (os.getpid(), int(time.time() * 1000) & 0xFFFFFF)
    out = "/tmp/.hsb-run.%s" % tag
    # The markers are split by quotes so the typed command itself never contains them.
    line = (
        "( %s\n) </dev/null >%s 2>&1; __r=$?; echo '@@HSB''BEG %s@@'; cat %s; "
        "for __i in 1 2 3; do echo '@@HSB''END %s '$__r'@@'; done; rm -f %s\n" % (cmd, out, tag, out, tag, out)
    )
    if "\x01" in line or "\x03" in line or len(line) > 3800:
        print("console.py: command too long or contains control characters; use `rig.sh push`", file=sys.stderr)
        return 125
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock_path)
    except OSError as e:
        print("console.py: cannot connect to %s: %s" % (sock_path, e), file=sys.stderr)
        return 125
    # An empty line first: a half-typed line left by an interrupted caller is then terminated.
    data = line.encode()
    s.sendall(b"\n")
    time.sleep(0.3)
    # Type in small chunks: Xen's serial receive ring is small and dom0 is slow under TCG.
    for i in range(0, len(data), 64):
        s.sendall(data[i : i + 64])
        time.sleep(0.02)
    buf = b""
    end = re.compile(rb"@@HSBEND " + tag.encode() + rb" (\d+)@@")
    beg = b"@@HSBBEG " + tag.encode() + b"@@"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            # Interrupt the command (SIGINT through the tty) so the shell is free for the next caller.
            try:
                s.sendall(b"\x03\n")
            except OSError:
                pass
            print("console.py: timeout after %ss waiting for the command to finish; sent Ctrl-C" % timeout, file=sys.stderr)
            return 124
        s.settimeout(min(left, 1.0))
        try:
            chunk = s.recv(65536)
            if not chunk:
                print("console.py: console closed", file=sys.stderr)
                return 125
            buf += chunk
        except socket.timeout:
            continue
        m = end.search(buf)
        if m:
            start = buf.find(beg)
            body = buf[start + len(beg) : m.start()] if start >= 0 else b""
            text = body.decode("utf-8", "replace").replace("\r", "")
            lines = [l for l in text.split("\n") if not NOISE.match(l)]
            text = "\n".join(lines).strip("\n")
            if text:
                print(text)
            s.close()
            return int(m.group(1))


def wait(log, timeout, text):
    deadline = time.monotonic() + timeout
    needle = text.encode()
    while time.monotonic() < deadline:
        try:
            with open(log, "rb") as f:
                if needle in f.read():
                    return 0
        except FileNotFoundError:
            pass
        time.sleep(1)
    return 124


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], float(sys.argv[3]), " ".join(sys.argv[4:])))
    if len(sys.argv) >= 5 and sys.argv[1] == "wait":
        sys.exit(wait(sys.argv[2], float(sys.argv[3]), " ".join(sys.argv[4:])))
    print(__doc__, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
