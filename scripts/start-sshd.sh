#!/bin/sh
# Make /usr/sbin/sshd available for the SSH tunnel tests (tests/ssh_server.py).
#
# Idempotent: does nothing when sshd is already installed. Otherwise installs Debian's
# openssh-server package, and nothing else. It does not start a daemon: each test run starts
# its own sshd on a free loopback port with a throwaway host key and config (tests/ssh_server.py),
# which also calls this script when sshd is missing. Needs root (or sudo) and apt-get.
set -eu

SSHD=/usr/sbin/sshd

if [ -x "$SSHD" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "start-sshd.sh: $SSHD is missing and apt-get is unavailable; install OpenSSH's sshd" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends openssh-server

if [ ! -x "$SSHD" ]; then
    echo "start-sshd.sh: installed openssh-server but $SSHD is still missing" >&2
    exit 1
fi
