#!/bin/sh
# Becomes PID 1 of a new node. Runs with the host's root filesystem still
# visible, as the node's root inside its user namespace and its fresh mount,
# uts, ipc, pid, net and cgroup namespaces; builds the node's root and pivots
# into it. Every mount made
# here lives in the node's mount namespace only, so it vanishes with the node.
#
# usage: nodestart.sh LOWER_DIR NODE_DIR HOSTNAME "CG_NAME:MOUNT_OPTS ..."
# (LOWER_DIR: the node image, mapped into the node's uid range)
set -eu
IMG=$1 DIR=$2 NAME=$3 CGROUPS=$4
ROOT=$DIR/root

mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$IMG,upperdir=$DIR/upper,workdir=$DIR/work" "$ROOT"
# Docker's own data must not sit on overlayfs (overlay2 cannot stack on it).
mount --bind "$DIR/docker" "$ROOT/var/lib/docker"
mount -t proc -o nosuid,nodev,noexec proc "$ROOT/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$ROOT/sys"
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$ROOT/sys/fs/cgroup"
for entry in $CGROUPS; do
    cg=${entry%%:*} opts=${entry#*:}
    mkdir -p "$ROOT/sys/fs/cgroup/$cg"
    if [ "$opts" = cgroup2 ]; then
        mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$ROOT/sys/fs/cgroup/$cg"
    else
        mount -t cgroup -o "nosuid,nodev,noexec,$opts" cgroup "$ROOT/sys/fs/cgroup/$cg"
    fi
done

# A minimal /dev: the character devices programs expect, nothing of the host's
# disks. Bind mounts of the host's nodes, since a user namespace may not mknod.
mount -t tmpfs -o mode=755,nosuid,size=1m dev "$ROOT/dev"
for d in null zero full random urandom tty; do
    touch "$ROOT/dev/$d"
    mount --bind "/dev/$d" "$ROOT/dev/$d"
done
mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm" "$ROOT/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$ROOT/dev/mqueue"
ln -s /proc/self/fd "$ROOT/dev/fd"
ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$ROOT/run"

hostname "$NAME"
cd "$ROOT"
mkdir -p .oldroot
pivot_root . .oldroot
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/sh -c 'cd / && umount -l /.oldroot && rmdir /.oldroot && exec tini -- /usr/local/sbin/lab-init'
