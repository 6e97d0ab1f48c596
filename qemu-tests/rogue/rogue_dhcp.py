#!/usr/bin/env python3
"""A hostile DHCP responder for the hostile-LAN QEMU test (issue 15 §8).

It runs inside the test LAN's network namespace next to dnsmasq. It sniffs DHCP requests on
the bridge with an AF_PACKET socket (dnsmasq keeps UDP port 67) and answers every DISCOVER and
REQUEST, before dnsmasq can, with a burst of replies that carry the client's xid and chaddr but
that no sane server sends:

  hlen 17 (dhcproto's chaddr() sliced past its 16-byte array: the issue-15 panic), options cut
  off in the middle, server identifiers 0.0.0.0 and 255.255.255.255, yiaddr 255.255.255.255,
  a non-contiguous subnet mask, option 93 with a bad length next to a router outside the
  subnet, and (to a REQUEST) an ACK and a NAK from a server the client did not select.

None of them is a usable OFFER, so a correct client ignores them all and binds dnsmasq's lease.
Each reply sent is logged as one line `rogue-dhcp sent <kind> to <xid>`. Bounded: it stops
after MAX_REPLIES replies or RUN_SECONDS seconds, whichever is first.

usage: rogue_dhcp.py IFACE SERVER_ADDR
"""

import socket
import struct
import sys
import time

MAX_REPLIES = 2000
RUN_SECONDS = 900
MAGIC = bytes([99, 130, 83, 99])
YIADDR = socket.inet_aton("192.0.2.150")


def opt(code, value):
    return bytes([code, len(value)]) + value


def reply(xid, chaddr, options, hlen=6, yiaddr=YIADDR):
    head = struct.pack("!BBBBIHH", 2, 1, hlen, 0, xid, 0, 0x8000)
    head += bytes(4) + yiaddr + bytes(4) + bytes(4)  # ciaddr, yiaddr, siaddr, giaddr
    head += chaddr.ljust(16, b"\0") + bytes(64) + bytes(128)
    return head + MAGIC + options


def offer_options(server, kind=2, mask="255.255.255.0", router="192.0.2.1", extra=b""):
    """Options of an OFFER (kind 2) or ACK (kind 5), each code once (a repeated code would be
    concatenated by the client's decoder, RFC 3396)."""
    return (
        opt(53, bytes([kind]))
        + opt(54, server)
        + opt(1, socket.inet_aton(mask))
        + opt(3, socket.inet_aton(router))
        + opt(51, struct.pack("!I", 600))
        + extra
        + b"\xff"
    )


def hostile_burst(xid, chaddr, server, msg_type):
    zero = socket.inet_aton("0.0.0.0")
    bcast = socket.inet_aton("255.255.255.255")
    burst = [
        ("hlen-17", reply(xid, chaddr, offer_options(server), hlen=17)),
        ("hlen-255", reply(xid, chaddr, offer_options(server), hlen=255)),
        ("truncated-options", reply(xid, chaddr, opt(53, b"\x02") + bytes([54, 4, 192, 0]))),
        ("server-id-0.0.0.0", reply(xid, chaddr, offer_options(zero))),
        ("server-id-broadcast", reply(xid, chaddr, offer_options(bcast))),
        ("yiaddr-broadcast", reply(xid, chaddr, offer_options(server), yiaddr=bcast)),
        ("mask-255.0.255.0", reply(xid, chaddr, offer_options(server, mask="255.0.255.0"))),
        (
            "option-93-len-1-router-off-subnet",
            reply(xid, chaddr, offer_options(server, router="198.51.100.1", extra=opt(93, b"\x01"))),
        ),
    ]
    if msg_type == 3:  # REQUEST: answers from a server the client did not select
        burst.append(("ack-from-unselected-server", reply(xid, chaddr, offer_options(server, kind=5))))
        burst.append(("nak-from-unselected-server", reply(xid, chaddr, opt(53, b"\x06") + opt(54, server) + b"\xff")))
    return burst


def dhcp_request(frame):
    """(xid, chaddr, message type) of a BOOTREQUEST in an Ethernet frame, else None."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17 or len(ip) < ihl + 8 + 240:
        return None
    udp = ip[ihl:]
    if struct.unpack("!H", udp[2:4])[0] != 67:
        return None
    bootp = udp[8:]
    if bootp[0] != 1 or bootp[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", bootp[4:8])[0]
    chaddr = bootp[28:28 + min(bootp[2], 16)]
    msg_type = None
    i = 240
    while i + 1 < len(bootp) and bootp[i] != 255:
        if bootp[i] == 0:
            i += 1
            continue
        code, length = bootp[i], bootp[i + 1]
        if code == 53 and length == 1 and i + 2 < len(bootp):
            msg_type = bootp[i + 2]
        i += 2 + length
    return xid, chaddr, msg_type


def main():
    iface, server_addr = sys.argv[1], sys.argv[2]
    server = socket.inet_aton(server_addr)
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sniff.bind((iface, 0))
    sniff.settimeout(1.0)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    out.bind((server_addr, 0))
    print(f"rogue-dhcp ready on {iface} as {server_addr}", flush=True)
    sent = 0
    end = time.monotonic() + RUN_SECONDS
    while sent < MAX_REPLIES and time.monotonic() < end:
        try:
            frame = sniff.recv(2048)
        except socket.timeout:
            continue
        req = dhcp_request(frame)
        if req is None or req[2] not in (1, 3):
            continue
        xid, chaddr, msg_type = req
        for kind, packet in hostile_burst(xid, chaddr, server, msg_type):
            out.sendto(packet, ("255.255.255.255", 68))
            sent += 1
            print(f"rogue-dhcp sent {kind} to {xid:#010x}", flush=True)
    print(f"rogue-dhcp done after {sent} replies", flush=True)


if __name__ == "__main__":
    main()
