#!/usr/bin/env python3
"""Byte-level model of tansu 0.6's ApiVersions v3 response body (after the 4-byte
correlation id) and of librdkafka 2.0.2's rd_kafka_handle_ApiVersion parse, including
its rd_kafka_buf_skip_tags macro (src/rdkafka_buf.h:777-791 at v2.0.2), which skips
taglen-1 bytes instead of taglen (fixed by 8c8f8b9, released in v2.2.0)."""
import struct

def uvarint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])

def body(n_keys, tags):
    b = struct.pack(">h", 0)                        # ErrorCode
    b += uvarint(n_keys + 1)                        # compact array ApiKeys
    for k in range(n_keys):
        b += struct.pack(">hhh", k, 0, 1) + b"\x00" # key, min, max, empty tag buffer
    b += struct.pack(">i", 0)                       # ThrottleTimeMs
    b += uvarint(len(tags))
    for tag, data in tags:
        b += uvarint(tag) + uvarint(len(data)) + data
    return b

class Underflow(Exception): pass

def parse_2_0_2(buf, fixed=False):
    pos = 0
    def need(n):
        if pos + n > len(buf): raise Underflow(f"underflow at {pos}/{len(buf)}: expected {n} bytes > {len(buf)-pos} remaining")
    def rd_uvarint():
        nonlocal pos
        v = shift = 0
        while True:
            need(1); c = buf[pos]; pos += 1
            v |= (c & 0x7F) << shift; shift += 7
            if not c & 0x80: return v
    def skip(n):
        nonlocal pos
        need(n); pos += n
    def skip_tags():
        cnt = rd_uvarint()
        for _ in range(cnt):
            _tagtype = rd_uvarint(); taglen = rd_uvarint()
            if fixed:
                if taglen > 0: skip(taglen)
            elif taglen > 1:
                skip(taglen - 1)
    skip(2)
    n = rd_uvarint() - 1
    for _ in range(n):
        skip(6); skip_tags()
    skip(4)
    skip_tags()
    return pos

tansu_tags = [
    (0, uvarint(0 + 1)),                 # SupportedFeatures: empty compact array
    (1, struct.pack(">q", -1)),          # FinalizedFeaturesEpoch: -1
    (2, uvarint(0 + 1)),                 # FinalizedFeatures: empty compact array
    (3, b"\x00"),                        # ZkMigrationReady: false
]
N = 35  # 34 routes of tansu-broker 0.6 + ApiVersions itself
for name, tags in [("tansu 0.6 (all four tags present)", tansu_tags),
                   ("patched (tags omitted, as Kafka does for defaults)", [])]:
    b = body(N, tags)
    print(f"{name}: body {len(b)} bytes, top-level tag section starts at byte {len(body(N, [])) - 1}")
    print("  tag section bytes:", b[len(body(N, []))-1:].hex(" "))
    for fixed in (False, True):
        try:
            end = parse_2_0_2(b, fixed)
            print(f"  librdkafka {'>=2.2.0' if fixed else '2.0.2  '}: parsed OK, stopped at {end}/{len(b)}")
        except Underflow as e:
            print(f"  librdkafka {'>=2.2.0' if fixed else '2.0.2  '}: {e}")
