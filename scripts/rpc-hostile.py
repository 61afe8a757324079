#!/usr/bin/env python3
"""Hostile-client measurements against a running node's JSON-RPC port (issue 21).

Each scenario runs one attacker for a bounded time while a normal client (another connection)
samples the finalized height and the latency of `mesh_getAccount`, and the node's RSS and
thread count are read from /proc. Figures only; the pass/fail checks live in the Rust tests
(rpc/tests/hostile.rs, node/tests/rpc_node.rs).

  scripts/rpc-hostile.py --rpc 127.0.0.1:41501 --pid <meshd pid> --address 0x<account> badsig
  scripts/rpc-hostile.py ... noread
  scripts/rpc-hostile.py ... idle --count 2000

badsig: transactions with bad signatures (a valid sender key, a canonical but wrong
        signature: full verification work), pipelined on one WebSocket in bursts of 500.
noread: `mesh_status` pipelined on one WebSocket that never reads an answer.
idle:   idle TCP connections from 127.0.0.2, as many as --count.
"""

import argparse
import json
import socket
import struct
import threading
import time

BASEPOINT = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")


def http_call(addr, method, params, timeout=5.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    head = (
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    _, _, payload = data.partition(b"\r\n\r\n")
    return json.loads(payload)


def proc(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def forged_tx(chain_id):
    """A borsh SignedTransaction: transfer from a valid key, signature (R, s) canonical but
    wrong, so the node does the whole verification before refusing it."""
    tx = struct.pack("<I", len(chain_id)) + chain_id.encode()
    tx += BASEPOINT  # sender
    tx += struct.pack("<QQ", 0, 1000)  # nonce, fee
    tx += b"\x00" + BASEPOINT + struct.pack("<Q", 1)  # Op::Transfer { to, amount }
    tx += BASEPOINT + bytes(32)  # signature: R, then s = 0 (canonical)
    return "0x" + tx.hex()


def ws_connect(addr, source=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.connect(addr)
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(text):
    payload = text.encode()
    out = bytearray([0x81])
    if len(payload) < 126:
        out.append(0x80 | len(payload))
    elif len(payload) < 65536:
        out.append(0x80 | 126)
        out += struct.pack(">H", len(payload))
    else:
        out.append(0x80 | 127)
        out += struct.pack(">Q", len(payload))
    return bytes(out) + b"\x00\x00\x00\x00" + payload


def read_frames(sock, count, deadline):
    """Text frames until `count`, or the deadline."""
    pending = b""
    texts = []
    while len(texts) < count and time.time() < deadline:
        while len(pending) >= 2:
            length = pending[1] & 0x7F
            header = 2
            if length == 126:
                if len(pending) < 4:
                    break
                length = struct.unpack(">H", pending[2:4])[0]
                header = 4
            elif length == 127:
                if len(pending) < 10:
                    break
                length = struct.unpack(">Q", pending[2:10])[0]
                header = 10
            if len(pending) < header + length:
                break
            if pending[0] & 0x0F == 1:
                texts.append(pending[header : header + length])
            pending = pending[header + length :]
        if len(texts) >= count:
            break
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(1 << 20)
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        pending += chunk
    return texts


class Observer(threading.Thread):
    """The normal client: height and `mesh_getAccount` latency every 100 ms; RSS, threads."""

    def __init__(self, addr, pid, address):
        super().__init__(daemon=True)
        self.addr, self.pid, self.address = addr, pid, address
        self.stop = False
        self.heights = []  # (time, height)
        self.latencies = []
        self.failures = 0
        self.rss_peak = 0
        self.threads_peak = 0

    def run(self):
        while not self.stop:
            start = time.time()
            try:
                status = http_call(self.addr, "mesh_status", [])
                self.heights.append((time.time(), status["result"]["finalized_height"]))
                t0 = time.time()
                answer = http_call(self.addr, "mesh_getAccount", [self.address])
                if "result" in answer:
                    self.latencies.append(time.time() - t0)
                else:
                    self.failures += 1
            except Exception:
                self.failures += 1
            self.rss_peak = max(self.rss_peak, proc(self.pid, "VmRSS"))
            self.threads_peak = max(self.threads_peak, proc(self.pid, "Threads"))
            time.sleep(max(0.0, 0.1 - (time.time() - start)))

    def report(self):
        heights = self.heights
        if len(heights) >= 2:
            span = heights[-1][0] - heights[0][0]
            blocks = heights[-1][1] - heights[0][1]
            longest = 0.0
            last_change = heights[0][0]
            for (t, h), (_, previous) in zip(heights[1:], heights):
                if h != previous:
                    longest = max(longest, t - last_change)
                    last_change = t
            longest = max(longest, heights[-1][0] - last_change)
            print(f"  finalized {blocks} blocks in {span:.1f} s = {blocks / span:.2f} blocks/s;"
                  f" longest time without a new height {longest:.2f} s")
        if self.latencies:
            ordered = sorted(self.latencies)
            p50 = ordered[len(ordered) // 2]
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            print(f"  normal client mesh_getAccount: {len(ordered)} answered, p50 {p50 * 1e3:.1f} ms,"
                  f" p99 {p99 * 1e3:.1f} ms, max {ordered[-1] * 1e3:.1f} ms; {self.failures} failed")
        else:
            print(f"  normal client: nothing answered, {self.failures} failed")
        print(f"  node RSS peak {self.rss_peak / 1024:.0f} MiB, threads peak {self.threads_peak}")


def badsig(args, addr, chain_id):
    tx = forged_tx(chain_id)
    sock = ws_connect(addr)
    deadline = time.time() + args.seconds
    sent = codes = 0
    counts = {}
    while time.time() < deadline:
        burst = b"".join(
            frame(json.dumps({"jsonrpc": "2.0", "id": i, "method": "mesh_sendTransaction",
                              "params": [tx]}))
            for i in range(500)
        )
        sock.sendall(burst)
        sent += 500
        for text in read_frames(sock, 500, deadline + 30):
            code = json.loads(text).get("error", {}).get("code")
            counts[code] = counts.get(code, 0) + 1
            codes += 1
    sock.close()
    print(f"  sent {sent} forged transactions, {codes} answered: {counts}")


def noread(args, addr, _chain_id):
    sock = ws_connect(addr, args.source)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "mesh_status", "params": []}))
    chunk = request * 1000
    sock.settimeout(2.0)
    deadline = time.time() + args.seconds
    sent = 0
    outcome = "still open"
    while time.time() < deadline:
        try:
            sock.sendall(chunk)
            sent += 1000
        except socket.timeout:
            outcome = "the node stopped reading (send blocked 2 s)"
            break
        except OSError as err:
            outcome = f"closed by the node ({err.strerror})"
            break
    # Keep not reading until the end: does the node close it?
    while time.time() < deadline:
        try:
            sock.sendall(request)
        except socket.timeout:
            pass
        except OSError as err:
            outcome += f"; then closed by the node ({err.strerror})"
            break
        time.sleep(0.5)
    sock.close()
    print(f"  pipelined {sent} calls without reading: {outcome}")


def idle(args, addr, _chain_id):
    held, refused = [], 0
    for _ in range(args.count):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((args.source, 0))
            sock.settimeout(2.0)
            sock.connect(addr)
            held.append(sock)
        except OSError:
            refused += 1
    time.sleep(args.seconds)
    still_open = 0
    for sock in held:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
            if data and data.startswith(b"HTTP/1.1 503"):
                refused += 1
            elif not data:
                pass
            else:
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    print(f"  opened {args.count} idle connections: {refused} refused (503 or reset),"
          f" {still_open} still open after {args.seconds} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpc", required=True, help="host:port of the node's JSON-RPC")
    parser.add_argument("--pid", type=int, required=True, help="the node's process id")
    parser.add_argument("--address", required=True, help="an account for mesh_getAccount")
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--source", default="127.0.0.2", help="the attacker's source address")
    parser.add_argument("scenario", choices=["badsig", "noread", "idle"])
    args = parser.parse_args()
    host, port = args.rpc.rsplit(":", 1)
    addr = (host, int(port))
    chain_id = http_call(addr, "mesh_status", [])["result"]["chain_id"]
    print(f"{args.scenario}: node pid {args.pid}, RSS {proc(args.pid, 'VmRSS') / 1024:.0f} MiB,"
          f" threads {proc(args.pid, 'Threads')} before")
    observer = Observer(addr, args.pid, args.address)
    observer.start()
    time.sleep(2.0)
    {"badsig": badsig, "noread": noread, "idle": idle}[args.scenario](args, addr, chain_id)
    observer.stop = True
    observer.join()
    observer.report()
    time.sleep(5.0)
    print(f"  5 s after the attacker left: RSS {proc(args.pid, 'VmRSS') / 1024:.0f} MiB,"
          f" threads {proc(args.pid, 'Threads')}")


if __name__ == "__main__":
    main()
