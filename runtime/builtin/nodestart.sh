#!/bin/sh
# Becomes PID 1 of a new node. Runs with the host's root filesystem still
# visible, as the node's root inside its user namespace and its fresh mount,
# uts, ipc, pid, net and cgroup namespaces; builds the node's root and pivots
# into it. Every mount made here lives in the node's mount namespace only, so
# it vanishes with the node (`unshare --mount` made every mount private
# already: nothing propagates to the host).
#
# usage: nodestart.sh NODE_ROOT TABLE1 TABLE2
# NODE_ROOT: where the node's root is mounted; TABLE1, TABLE2: fstab files the
# runtime wrote (launch.py `mount_tables`): the root, proc, sys, cgroups and a
# tmpfs /dev; then the device nodes, devpts, shm, mqueue and /run. One
# `mount -a` each (X-mount.mkdir makes mount points): a cold start waits for
# this script, and a `mount` process per mount cost a node a quarter of its
# start-up before its engine ran.
set -eu
ROOT=$1
mount -a -T "$2"
# A minimal /dev: the character devices programs expect, nothing of the host's
# disks. The second table bind-mounts the host's nodes on these files, since a
# user namespace may not mknod.
cd "$ROOT/dev"
touch null zero full random urandom tty
mount -a -T "$3"
ln -s pts/ptmx ptmx
ln -s /proc/self/fd fd
ln -s /proc/self/fd/0 stdin
ln -s /proc/self/fd/1 stdout
ln -s /proc/self/fd/2 stderr

# (lab-init sets the hostname from /etc/hostname, which the runtime wrote.)
cd "$ROOT"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    tini -- /usr/local/sbin/lab-init
