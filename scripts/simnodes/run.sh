#!/usr/bin/env bash
# Runs an MPI command across simulated nodes on one Linux machine (root required).
#
#   scripts/simnodes/run.sh NODES RANKS_PER_NODE COMMAND [ARGS...]
#
# SIMNODES_SHM_SIZE sets the size of each node's /dev/shm (tmpfs `size=`, default 512m).
# Each node is a set of namespaces of its own: a network namespace joined to the others by
# a veth pair on a bridge, a mount namespace with its own tmpfs on /dev/shm, and a UTS
# namespace with its own hostname (node0, node1, ...). mpiexec (MPICH Hydra) runs in a hub
# network namespace of its own, so it never mistakes a node for itself and forks locally;
# its ssh launcher is pointed at launch.sh, which Hydra calls as `launch.sh -x HOST CMD...`
# and which enters that node's namespaces. Ranks of one node share that node's /dev/shm;
# ranks of different nodes share nothing but the (simulated) network.
#
# The whole run happens inside a private mount namespace (for the /etc/hosts that names
# the nodes), and every namespace and link is removed on exit.
set -euo pipefail
nodes=$1 ppn=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
tag="ndshm$$"
hub="$tag-hub"
net=10.213.$(( $$ % 200 + 20 ))

cleanup() {
    # Whatever still runs in the namespaces (a rank stuck in MPI_Finalize, Hydra's proxies,
    # which are session leaders of their own) is ended with them: no orphan outlives a run.
    for ns in "$hub" $(for ((i = 0; i < nodes; i++)); do echo "$tag-node$i"; done); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
}
work=$(mktemp -d)
trap cleanup EXIT

ip netns add "$hub"
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add "$net.254/24" dev br0
ip -n "$hub" link set br0 up
hosts="$work/hosts"
{ echo "127.0.0.1 localhost"; echo "$net.254 hub"; } > "$hosts"
: > "$work/hostfile"
for ((i = 0; i < nodes; i++)); do
    ns="$tag-node$i"
    ip netns add "$ns"
    ip link add "${tag}n$i" type veth peer name "${tag}h$i"
    ip link set "${tag}n$i" netns "$ns"
    ip link set "${tag}h$i" netns "$hub"
    ip -n "$ns" link set "${tag}n$i" name eth0
    ip -n "$ns" addr add "$net.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$hub" link set "${tag}h$i" master br0 up
    echo "$net.$((i + 1)) node$i" >> "$hosts"
    echo "node$i:$ppn" >> "$work/hostfile"
done

# The launcher Hydra calls as `launch.sh -x HOST CMD...` (ssh's calling convention).
cat > "$work/launch.sh" <<LAUNCH
#!/usr/bin/env bash
[ "\$1" = -x ] && shift
host=\$1; shift
exec ip netns exec "$tag-\$host" unshare --mount --uts --propagation private \\
    sh -c 'mount -t tmpfs -o size=${SIMNODES_SHM_SIZE:-512m},mode=1777 tmpfs /dev/shm && hostname "\$0" && exec sh -c "\$1"' \\
    "\$host" "\$*"
LAUNCH
chmod +x "$work/launch.sh"

# mpiexec in the hub namespace, with /etc/hosts naming the nodes (private mount namespace).
# UCX over TCP on each node's eth0: its shared-memory transports would take two nodes of
# one machine for one node.
# In the background, so that a TERM to this script (a caller's deadline) runs the cleanup
# at once, which ends everything in the namespaces.
ip netns exec "$hub" unshare --mount --propagation private sh -c '
    mount --bind "$1" /etc/hosts && shift &&
    exec "$@"' sh "$hosts" \
    mpiexec -launcher ssh -launcher-exec "$work/launch.sh" -f "$work/hostfile" \
        -iface br0 -n $((nodes * ppn)) -ppn "$ppn" \
        -genv UCX_TLS tcp,self -genv UCX_NET_DEVICES eth0 \
        "$@" &
job=$!
trap 'exit 143' TERM INT
wait $job
