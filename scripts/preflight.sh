#!/bin/sh
# Can this machine run the lab's built-in runtime? Says plainly what is wrong.
problems=0
say() { echo "preflight: $*" >&2; problems=1; }
[ "$(id -u)" = 0 ] || say "run as root: nodes need namespaces, mounts and network devices (try: sudo make ...)"
[ "$(uname -s)" = Linux ] || say "the built-in runtime needs Linux"
if [ "$(id -u)" = 0 ]; then
    unshare --mount --uts --ipc --pid --net --cgroup --fork true 2>/dev/null ||
        say "this kernel (or container) refuses new namespaces: unshare --mount --pid --net --cgroup failed"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
        say "this kernel has no overlayfs"
fi
exit $problems
