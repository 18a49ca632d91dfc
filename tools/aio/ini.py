"""Line-wise INI edits for the devstack shim: comments and order are kept.

    ini.py set FILE SECTION KEY VALUE
    ini.py get FILE SECTION KEY        (prints the value, or nothing)
"""

import re
import sys

_SECTION = re.compile(r'^\s*\[([^\]]+)\]\s*$')
_KEY = re.compile(r'^\s*([^#;=\s][^=]*?)\s*=')


def _find(lines, section, key):
    current = None
    section_at = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            if current == section and section_at is not None:
                return section_at, None, i
            current = m.group(1).strip()
            if current == section:
                section_at = i
            continue
        if current == section:
            k = _KEY.match(line)
            if k and k.group(1) == key:
                return section_at, i, None
    return section_at, None, len(lines)


def main(argv):
    verb, path, section, key = argv[1:5]
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    section_at, at, end = _find(lines, section, key)
    if verb == 'get':
        if at is not None:
            print(lines[at].split('=', 1)[1].strip())
        return 0
    line = '%s = %s' % (key, argv[5])
    if at is not None:
        lines[at] = line
    elif section_at is None:
        lines += ['', '[%s]' % section, line]
    else:
        # After the section's last non-blank line.
        while end > section_at + 1 and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, line)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
