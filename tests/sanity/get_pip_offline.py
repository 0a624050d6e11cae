"""Offline stand-in for the pip bootstrap script ansible-test downloads (its host is unreachable here).

ansible-test runs ~/.ansible/test/cache/get_pip_<version>.py with pip's install arguments to put pip into a
fresh virtualenv. This does the same from Python's bundled pip and PyPI: ensurepip, then upgrade to the
requested pip, then remove setuptools/wheel when the caller asked for none.
"""

import subprocess
import sys

DROP = ("--no-setuptools", "--no-wheel")


def main(argv):
    args = [a for a in argv if a not in DROP]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *args])
    unwanted = [name for flag, name in (("--no-setuptools", "setuptools"), ("--no-wheel", "wheel")) if flag in argv]
    if unwanted:
        subprocess.call([sys.executable, "-m", "pip", "uninstall", "--yes", *unwanted])


if __name__ == "__main__":
    main(sys.argv[1:])
