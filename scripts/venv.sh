#!/bin/sh
# Makes .venv (or brings it up to date) with the Python packages of
# requirements.txt. Safe to re-run: it installs only when requirements.txt is
# newer than the last install.
#
# The venv is made from Debian's python3 (/usr/bin/python3, which
# install-deps.sh installs), not from whichever python3 comes first in PATH:
# Debian builds its Python with profile-guided and link-time optimisation,
# and a python3 of pyenv or the like is often a plain build. On this project's
# 2-core machines pyenv's 3.11.7 (--enable-shared, no --enable-optimizations)
# ran the lab's Python about a fifth slower: a class of 40 cost 109 against
# 87 ms of CPU per learner (python -m bench.classstart, 2026-12-04).
# PYTHON=/path/to/python3 picks another; a venv made from another
# interpreter than the one picked is made again.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=$(command -v python3); fi
fi
# The interpreter as the venv's pyvenv.cfg names what it was made from.
made_from=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
stamp=.venv/.requirements-installed
if [ -f .venv/pyvenv.cfg ] && ! grep -qx "executable = $made_from" .venv/pyvenv.cfg; then
    echo "making .venv again from $made_from (it was made from $(sed -n 's/^executable = //p' .venv/pyvenv.cfg))"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    touch "$stamp"
fi
