"""Make the AIO's 127.0.0.1 services reachable from a host's namespace.

    python netns_forward.py NETNS_FILE PORT...

The controller services listen on 127.0.0.1 of the machine's network
namespace; inside a simulated compute host's namespace 127.0.0.1 is that
namespace's own loopback.  This process opens its listening sockets inside
the host's namespace (a socket stays in the namespace it was created in),
then goes back to the machine's namespace and connects every accepted
connection to 127.0.0.1:PORT there.  So every URL the host's nova-compute
reads (its configuration, Keystone's catalog) works unchanged, and no
controller service has to listen on another address.
"""

import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, 'setns %s: %s' % (path, os.strerror(err)))
    finally:
        os.close(fd)


def listeners(netns, ports):
    """Listening sockets on 127.0.0.1:PORT inside ``netns``."""
    here = '/proc/self/ns/net'
    home = os.open(here, os.O_RDONLY)
    try:
        setns(netns)
        socks = []
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', port))
            s.listen(128)
            s.setblocking(False)
            socks.append((port, s))
    finally:
        setns('/proc/self/fd/%d' % home)
        os.close(home)
    return socks


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except ConnectionError:
            pass


def forwarder(port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(
                '127.0.0.1', port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def main(netns, ports):
    servers = [await asyncio.start_server(forwarder(port), sock=sock)
               for port, sock in listeners(netns, ports)]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1], [int(p) for p in sys.argv[2:]]))
