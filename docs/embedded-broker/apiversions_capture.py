#!/usr/bin/env python3
"""Send the ApiVersions v3 request librdkafka 2.0.2 sends and dump the response body."""
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
def cstr(s): b = s.encode(); return bytes([len(b) + 1]) + b
body = cstr("librdkafka") + cstr("2.0.2") + b"\x00"
hdr = struct.pack(">hhi", 18, 3, 1) + struct.pack(">h", 4) + b"kcat" + b"\x00"
req = hdr + body
for _ in range(100):
    try:
        s = socket.create_connection((host, port), timeout=2); break
    except OSError:
        time.sleep(0.2)
s.sendall(struct.pack(">i", len(req)) + req)
def recvn(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
size = struct.unpack(">i", recvn(4))[0]
resp = recvn(size)
corr, payload = resp[:4], resp[4:]
print("frame size", size, "correlation", struct.unpack(">i", corr)[0], "body bytes", len(payload))
err = struct.unpack(">h", payload[:2])[0]
n = payload[2] - 1
print("error", err, "api keys", n)
tags_at = 2 + 1 + 7 * n + 4
print("top-level tagged fields start at body byte", tags_at, ":", payload[tags_at:].hex(" "))
