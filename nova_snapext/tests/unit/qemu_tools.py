"""qemu-img and qemu-io for unit tests that build small real qcow2 files."""

import subprocess


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def qemu_io(path, *commands, fmt='qcow2'):
    """Run qemu-io ``commands`` (``write -P 0xaa 0 64k``...) on ``path``."""
    args = ['qemu-io', '-f', fmt]
    for command in commands:
        args += ['-c', command]
    run(*(args + [path]))
