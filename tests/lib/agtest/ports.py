"""Loopback TCP ports for the servers a test starts.

A port the kernel hands out for bind(0) comes from the ephemeral range, the
same range every outgoing connection takes its source port from; between the
moment a test picks such a port and the moment its server binds it, a route
or client connection of another server can take it ("address already in use").
Ports here are picked below the ephemeral range instead, at random, checked
free, and never handed out twice by one process.
"""

import random
import socket

_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    """n distinct TCP ports free on 127.0.0.1 now, outside the ephemeral range."""
    high = min(_ephemeral_low(), 65536) - 1
    low = 20000 if high > 21000 else 1024
    ports = []
    for port in random.sample(range(low, high + 1), high + 1 - low):
        if len(ports) == n:
            break
        if port not in _given and _bindable(port):
            _given.add(port)
            ports.append(port)
    if len(ports) < n:
        raise OSError("no %d free loopback ports from %d to %d" % (n, low, high))
    return ports


def free_port():
    return free_ports(1)[0]
