#!/usr/bin/env python3
"""Hostile-client measurements against a running node's JSON-RPC port (issue 21).

Each scenario runs one attacker for a bounded time while a normal client (another connection,
from 127.0.0.1) samples the finalized height and the latency of `mesh_getAccount`, and the
node's RSS and thread count are read from /proc. Figures only; the pass/fail checks live in the
Rust tests (rpc/tests/hostile.rs, node/tests/rpc_node.rs). Standard library only.

  scripts/rpc-hostile.py --rpc 127.0.0.1:41501 --pid <meshd pid> --address 0x<account> badsig
  scripts/rpc-hostile.py ... noread
  scripts/rpc-hostile.py ... idle --count 2000
  scripts/rpc-hostile.py ... --key <home>/accounts/account-1.json waitflood

badsig:    transactions with bad signatures (a valid sender key, a canonical but wrong
           signature: full verification work), pipelined on one WebSocket in bursts of 500.
noread:    `mesh_status` pipelined on one WebSocket that never reads an answer.
idle:      idle TCP connections from --source, as many as --count.
chunked:   --count POSTs from --source whose chunked body never ends (one chunk, then silence).
halfopen:  --count WebSockets from --source that finish the handshake, then go silent and
           never answer a ping (run it past idle_timeout_ms, e.g. --seconds 75).
subs:      --count connections spread over --sources addresses (127.0.0.2 on), each holding
           --subs subscriptions (mesh_subscribeBlocks replaying from height 1, and
           mesh_subscribeAccount, alternately); the notifications are read and dropped.
waitflood: --calls mesh_sendTransactionAndWait pipelined on one WebSocket (answers read), all
           of one signed transfer whose nonce leaves a gap, so it stays pending and each wait
           runs to its timeout (--wait-ms). Needs --key (a key file of a funded account).
batchwait: one JSON-RPC batch of --batch such waits (same transaction); prints how long the
           batch took to answer.
bigparams: 4 concurrent HTTP requests with 3.9 MB of params, again and again.
bigtx:     1 MB transactions (over the chain's limit) submitted over 4 connections, again and
           again.
mistakes:  every client mistake of the issue, over HTTP and WebSocket; prints each answer.
"""

import argparse
import hashlib
import json
import selectors
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


# ed25519 signing (RFC 8032), for the one valid transaction the wait scenarios need.
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _recover_x(y, sign):
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P != 0:
        x = x * SQRT_M1 % P
    if x & 1 != sign:
        x = P - x
    return x


_BY = 4 * pow(5, P - 2, P) % P
_BX = _recover_x(_BY, 0)
BASE = (_BX, _BY, 1, _BX * _BY % P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = b - a, dd - c, dd + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(scalar, point):
    result = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _encode(point):
    x, y, z, _ = point
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ed25519_sign(seed, message):
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    public = _encode(_mul(a, BASE))
    r = int.from_bytes(hashlib.sha512(digest[32:] + message).digest(), "little") % L
    big_r = _encode(_mul(r, BASE))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % L
    return public, big_r + ((r + k * a) % L).to_bytes(32, "little")


def signed_transfer(seed, chain_id, nonce, fee=1, amount=1):
    """A borsh SignedTransaction: a transfer of `amount` to the base point's key, signed over the `mesh/tx/v1`
    domain, the chain id and the body (ledger/src/crypto.rs `signing_bytes`)."""
    public, _ = ed25519_sign(seed, b"")
    chain = struct.pack("<I", len(chain_id)) + chain_id.encode()
    body = chain + public + struct.pack("<QQ", nonce, fee) + b"\x00" + BASEPOINT + struct.pack("<Q", amount)
    message = b"mesh/tx/v1\x00" + chain + body
    _, signature = ed25519_sign(seed, message)
    return "0x" + (body + signature).hex(), "0x" + public.hex()


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


def read_frames(sock, count, deadline, pending=None):
    """Text frames until `count`, or the deadline. With `pending` (a bytearray kept by the
    caller), bytes of a frame not yet complete are kept there for the next call."""
    if pending is None:
        pending = bytearray()
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
                texts.append(bytes(pending[header : header + length]))
            del pending[: header + length]
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
        self.failure_kinds = {}
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
                    self.failed(answer.get("error", {}).get("code"))
            except Exception as err:
                self.failed(type(err).__name__)
            self.rss_peak = max(self.rss_peak, proc(self.pid, "VmRSS"))
            self.threads_peak = max(self.threads_peak, proc(self.pid, "Threads"))
            time.sleep(max(0.0, 0.1 - (time.time() - start)))

    def failed(self, kind):
        self.failures += 1
        self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1

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
                  f" p99 {p99 * 1e3:.1f} ms, max {ordered[-1] * 1e3:.1f} ms; {self.failures} failed"
                  + (f" {self.failure_kinds}" if self.failures else ""))
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


def connect_from(addr, source, timeout=2.0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(addr)
    return sock


def classify_closed(sock):
    """What a held socket shows now: 'open', 'closed', or the HTTP status the node sent."""
    sock.setblocking(False)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return ("closed", data)
            data += chunk
    except BlockingIOError:
        return ("open", data)
    except OSError:
        return ("closed", data)


def hold(args, sockets, what):
    """Holds `sockets` for --seconds, then tells how each ended."""
    time.sleep(args.seconds)
    ends = {}
    for sock in sockets:
        state, data = classify_closed(sock)
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else None
        key = f"{state}" + (f" after HTTP {status}" if status else "")
        ends[key] = ends.get(key, 0) + 1
        sock.close()
    print(f"  {what}: after {args.seconds:.0f} s: {ends}")


def chunked(args, addr, _chain_id):
    held, refused = [], 0
    head = (f"POST / HTTP/1.1\r\nHost: {addr[0]}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"jso\r\n").encode()
    for _ in range(args.count):
        try:
            sock = connect_from(addr, args.source)
            sock.sendall(head)
            held.append(sock)
        except OSError:
            refused += 1
    # A connection refused at accept got a 503 and was closed at once.
    accepted = []
    for sock in held:
        state, data = classify_closed(sock)
        if data.startswith(b"HTTP/1.1 503") or state == "closed":
            refused += 1
            sock.close()
        else:
            sock.setblocking(True)
            accepted.append(sock)
    print(f"  {args.count} never-ending chunked bodies: {refused} refused at once (503 or reset),"
          f" {len(accepted)} held by the node")
    hold(args, accepted, "held bodies")


def halfopen(args, addr, _chain_id):
    held, refused = [], 0
    for _ in range(args.count):
        try:
            held.append(ws_connect(addr, args.source))
        except (OSError, AssertionError):
            refused += 1
    print(f"  {args.count} silent WebSockets (no pong): {refused} refused, {len(held)} upgraded")
    hold(args, held, "silent WebSockets")


def drain(sockets, stop):
    """Reads and drops whatever the node sends on `sockets` until `stop` is set; counts the
    text frames that are answers (an `id`) and their errors."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    counts = {"bytes": 0, "closed": 0}
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                counts["closed"] += 1
                selector.unregister(key.fileobj)
                continue
            counts["bytes"] += len(chunk)
    selector.close()
    return counts


def subs(args, addr, _chain_id):
    sockets, refused = [], 0
    sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]
    for index in range(args.count):
        try:
            sockets.append(ws_connect(addr, sources[index % len(sources)]))
        except (OSError, AssertionError):
            refused += 1
    granted = 0
    errors = {}
    for sock in sockets:
        requests = []
        for i in range(args.subs):
            if i % 2 == 0:
                method, params = "mesh_subscribeBlocks", [{"from_height": 1}]
            else:
                method, params = "mesh_subscribeAccount", [args.address]
            requests.append(frame(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                              "params": params})))
        sock.sendall(b"".join(requests))
    # Count the subscription answers (notifications have no id) as they come.
    deadline = time.time() + 30
    for sock in sockets:
        answered = 0
        pending = bytearray()
        while answered < args.subs and time.time() < deadline:
            texts = read_frames(sock, 1, min(deadline, time.time() + 5), pending)
            if not texts:
                break
            for text in texts:
                message = json.loads(text)
                if "id" in message:
                    answered += 1
                    if "result" in message:
                        granted += 1
                    else:
                        error = message.get("error", {})
                        kind = (error.get("code"), (error.get("data") or {}).get("what"))
                        errors[kind] = errors.get(kind, 0) + 1
    print(f"  {len(sockets)} connections ({refused} refused) from {len(sources)} addresses:"
          f" {granted} subscriptions granted, refused by (code, what): {errors}")
    stop = threading.Event()
    reader = threading.Thread(target=lambda: print(f"  notifications read: {drain(sockets, stop)}"))
    reader.start()
    time.sleep(args.seconds)
    stop.set()
    reader.join()
    for sock in sockets:
        sock.close()


def pending_transfer(args, addr, chain_id):
    """A signed transfer from --key's account with a nonce gap of 3: it waits in the mempool
    and never becomes final while nothing fills the gap."""
    with open(args.key) as key_file:
        key = json.load(key_file)
    seed = bytes.fromhex(key["secret"].removeprefix("0x"))
    account = http_call(addr, "mesh_getAccount", [key["address"]])["result"]
    tx, _ = signed_transfer(seed, chain_id, account["nonce"] + 3)
    answer = http_call(addr, "mesh_sendTransaction", [tx])
    print(f"  submitted a transfer with a nonce gap: {answer.get('result') or answer.get('error')}")
    return tx


def waitflood(args, addr, chain_id):
    tx = pending_transfer(args, addr, chain_id)
    sock = ws_connect(addr, args.source)
    counts = {}
    sent = 0
    start = time.time()
    while sent < args.calls and time.time() < start + args.seconds:
        burst = min(500, args.calls - sent)
        sock.sendall(b"".join(
            frame(json.dumps({"jsonrpc": "2.0", "id": sent + i,
                              "method": "mesh_sendTransactionAndWait",
                              "params": [tx, args.wait_ms]}))
            for i in range(burst)))
        sent += burst
        # The calls over the per-connection bound are answered at once; read them.
        for text in read_frames(sock, burst, time.time() + 2):
            code = json.loads(text).get("error", {}).get("code", "result")
            counts[code] = counts.get(code, 0) + 1
    print(f"  {sent} waits pipelined in {time.time() - start:.1f} s; answered so far: {counts}")
    # Hold the connection (the waits that run hold their slots) for the rest of --seconds.
    remaining = start + args.seconds - time.time()
    for text in read_frames(sock, sent, time.time() + max(0.0, remaining)):
        code = json.loads(text).get("error", {}).get("code", "result")
        counts[code] = counts.get(code, 0) + 1
    sock.close()
    print(f"  answers by code when the client left: {counts}")


def batchwait(args, addr, chain_id):
    tx = pending_transfer(args, addr, chain_id)
    sock = ws_connect(addr, args.source)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "mesh_sendTransactionAndWait",
              "params": [tx, args.wait_ms]} for i in range(args.batch)]
    start = time.time()
    sock.sendall(frame(json.dumps(batch)))
    texts = read_frames(sock, 1, start + args.batch * args.wait_ms / 1000 + 30)
    took = time.time() - start
    if texts:
        answers = json.loads(texts[0])
        codes = {}
        for answer in answers if isinstance(answers, list) else [answers]:
            code = answer.get("error", {}).get("code", "result")
            codes[code] = codes.get(code, 0) + 1
        print(f"  a batch of {args.batch} waits of {args.wait_ms} ms answered after {took:.1f} s"
              f" (one after another would take {args.batch * args.wait_ms / 1000:.0f} s): {codes}")
    else:
        print(f"  the batch was not answered within {took:.0f} s")
    sock.close()


def http_raw(addr, body, source, timeout=30.0):
    """POSTs `body` (bytes) from `source`; the status and the decoded answer, or the error."""
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        with connect_from(addr, source, timeout) as sock:
            sock.sendall(head + body)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as err:
        return None, f"transport: {err}"
    head, _, payload = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), json.loads(payload)
    except (ValueError, IndexError):
        return None, data[:200]


def flood_http(args, addr, bodies, workers=4):
    """Sends the bodies over `workers` threads from --source until --seconds pass; counts the
    answers by HTTP status and JSON-RPC code."""
    counts = {}
    lock = threading.Lock()
    deadline = time.time() + args.seconds

    def worker(index):
        while time.time() < deadline:
            status, answer = http_raw(addr, bodies[index % len(bodies)], args.source)
            if isinstance(answer, dict):
                key = (status, answer.get("error", {}).get("code", "result"))
            else:
                key = (status, "no answer")
            with lock:
                counts[key] = counts.get(key, 0) + 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def bigparams(args, addr, _chain_id):
    params = ",".join(["1"] * 1_950_000)  # 3.9 MB
    body = ('{"jsonrpc":"2.0","id":1,"method":"mesh_getReceipt","params":[' + params + "]}").encode()
    counts = flood_http(args, addr, [body])
    print(f"  requests of {len(body) / 1e6:.1f} MB, 4 at a time for {args.seconds:.0f} s,"
          f" answers by (status, code): {counts}")


def bigtx(args, addr, _chain_id):
    tx = "0x" + "00" * (1 << 20)  # 1 MiB, over the chain's 16,896 bytes
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "mesh_sendTransaction",
                       "params": [tx]}).encode()
    counts = flood_http(args, addr, [body])
    print(f"  1 MiB transactions, 4 connections for {args.seconds:.0f} s,"
          f" answers by (status, code): {counts}")


def mistakes(args, addr, _chain_id):
    call = b'{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}'

    def raw(request):
        try:
            with connect_from(addr, args.source, 10) as sock:
                sock.sendall(request)
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as err:
            return f"transport: {err}"
        head, _, payload = data.partition(b"\r\n\r\n")
        return f"{head.split(b' ', 2)[1].decode() if head else '-'} {payload[:120].decode(errors='replace')}"

    print("  Content-Length + chunked, body not chunked:", raw(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(call)).encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + call))
    print("  Content-Length: 99999999999:", raw(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999\r\n\r\n{"))
    ids = ['{"a":1}', "[1]", "1.5", "18446744073709551616", "true", "-3"]
    for id_text in ids:
        body = ('{"jsonrpc":"2.0","id":' + id_text + ',"method":"mesh_status","params":[]}').encode()
        status, answer = http_raw(addr, body, args.source)
        print(f"  HTTP id {id_text}: {status} {json.dumps(answer)[:110]}")
    sock = ws_connect(addr, args.source)
    for id_text in ids:
        sock.sendall(frame('{"jsonrpc":"2.0","id":' + id_text + ',"method":"mesh_status","params":[]}'))
        texts = read_frames(sock, 1, time.time() + 5)
        print(f"  WebSocket id {id_text}: {texts[0].decode()[:110] if texts else 'no answer in 5 s'}")
    sock.sendall(frame('[{"jsonrpc":"2.0","id":1,"method":"mesh_status"},'
                       '{"jsonrpc":"2.0","id":false,"method":"mesh_status"}]'))
    texts = read_frames(sock, 1, time.time() + 5)
    print(f"  WebSocket batch with id false: {texts[0].decode()[:110] if texts else 'no answer in 5 s'}")
    sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpc", required=True, help="host:port of the node's JSON-RPC")
    parser.add_argument("--pid", type=int, required=True, help="the node's process id")
    parser.add_argument("--address", required=True, help="an account for mesh_getAccount")
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--source", default="127.0.0.2", help="the attacker's source address")
    parser.add_argument("--sources", type=int, default=4, help="subs: attacker addresses")
    parser.add_argument("--subs", type=int, default=64, help="subs: subscriptions per connection")
    parser.add_argument("--key", help="waitflood, batchwait: key file of a funded account")
    parser.add_argument("--calls", type=int, default=30000, help="waitflood: waits sent")
    parser.add_argument("--batch", type=int, default=100, help="batchwait: waits in the batch")
    parser.add_argument("--wait-ms", type=int, default=20000, help="waitflood, batchwait")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    host, port = args.rpc.rsplit(":", 1)
    addr = (host, int(port))
    chain_id = http_call(addr, "mesh_status", [])["result"]["chain_id"]
    print(f"{args.scenario}: node pid {args.pid}, RSS {proc(args.pid, 'VmRSS') / 1024:.0f} MiB,"
          f" threads {proc(args.pid, 'Threads')} before")
    observer = Observer(addr, args.pid, args.address)
    observer.start()
    time.sleep(2.0)
    SCENARIOS[args.scenario](args, addr, chain_id)
    observer.stop = True
    observer.join()
    observer.report()
    # Tokio keeps an idle blocking-pool thread for 10 s: threads are read again after that.
    for after in (5, 15):
        time.sleep(5.0 if after == 5 else 10.0)
        print(f"  {after} s after the attacker left: RSS {proc(args.pid, 'VmRSS') / 1024:.0f} MiB,"
              f" threads {proc(args.pid, 'Threads')}")


SCENARIOS = {
    "badsig": badsig, "noread": noread, "idle": idle, "chunked": chunked, "halfopen": halfopen,
    "subs": subs, "waitflood": waitflood, "batchwait": batchwait, "bigparams": bigparams,
    "bigtx": bigtx, "mistakes": mistakes,
}

if __name__ == "__main__":
    main()
