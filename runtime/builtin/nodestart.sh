#!/bin/sh
# Becomes PID 1 of a new node. Runs with the host's root filesystem still
# visible, as the node's root inside its user namespace and its fresh mount,
# uts, ipc, pid, net and cgroup namespaces; builds the node's root and pivots
# into it. Every mount made here lives in the node's mount namespace only, so
# it vanishes with the node (`unshare --mount` made every mount private
# already: nothing propagates to the host).
#
# usage: nodestart.sh NODE_ROOT TABLE
# NODE_ROOT: where the node's root is mounted; TABLE: the fstab file the
# runtime wrote (launch.py `mount_table`): the root, proc, sys, cgroups, /dev
# (a directory on the node's disk the runtime filled: the device files the
# host's nodes are bound on, the /proc/self/fd links), devpts, shm, mqueue
# and /run. One `mount -a` (X-mount.mkdir makes mount points); the root's
# /.oldroot was made by the runtime too: a cold start waits for every
# process started here.
set -eu
ROOT=$1
mount -a -T "$2"
# (lab-init sets the hostname from /etc/hostname, which the runtime wrote.)
cd "$ROOT"
pivot_root . .oldroot
cd /
umount -l /.oldroot
# What `env -i` would leave, without a process for it.
unset LAB_CGROUPS LAB_PIDFILE ROOT OLDPWD
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec tini -- /usr/local/sbin/lab-init
