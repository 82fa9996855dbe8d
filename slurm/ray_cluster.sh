#!/usr/bin/env bash
# Start a Ray cluster on a SLURM allocation: the batch node is the head, the other nodes join it.
#
#   sbatch slurm/ray_cluster.sh                      keep the cluster up for `ray job submit`
#   sbatch slurm/ray_cluster.sh -- clrdist train configs/jetclr_toptag.yaml --set scaling.num_workers=8
#                                                    run one command on it, then stop
#   sbatch slurm/ray_cluster.sh --mlflow -- ...      also an MLflow tracking server on the head
#
# Options (before `--`):
#   --mlflow            start `mlflow server` on the head (the only writer of its SQLite store)
#                       and export MLFLOW_TRACKING_URI to every process
#   --min-nodes N       nodes that must have joined before the command starts (default: all)
#   --join-timeout S    fail the job if they have not joined after S seconds (default: 300)
#
# Size the allocation with sbatch's own flags (`sbatch --nodes=4 --gpus-per-node=4 ...`); every
# node offers Ray the CPUs and GPUs SLURM gave its task. Security and isolation:
#   - Token authentication stays on: a fresh token per job, in a 0600 file under
#     $CLRDIST_RAY_DIR/$SLURM_JOB_ID (default ~/.clrdist/ray; on a file system the login node
#     sees); every Ray process of the job and the command get RAY_AUTH_MODE=token and
#     RAY_AUTH_TOKEN_PATH. The job log prints how to submit with it from the login node.
#   - The head address is that of $CLRDIST_RAY_IFACE (e.g. ib0) if set, else $CLRDIST_RAY_HEAD_IP
#     if set, else the head's routable address; never loopback.
#   - Ports: a block of 500 derived from the job id (20000 + (id % 24) * 500), or from
#     $CLRDIST_RAY_PORT_BASE: GCS +0, dashboard and job server +1, Ray client +2, MLflow +3,
#     Ray workers +10..+499; each node's own services take ports the OS picks free. Jobs sharing
#     a node use disjoint ports. The job's `cluster.env` lists the addresses.
#   - Ray's temp dir is per job and node, on node-local disk ($CLRDIST_RAY_TMPDIR, default /tmp);
#     it is removed at the end unless CLRDIST_KEEP_RAY_TMP=1.
#   - Dashboard, job server and MLflow bind to 127.0.0.1 on the head (reach them through an SSH
#     tunnel); set CLRDIST_DASHBOARD_HOST / CLRDIST_MLFLOW_HOST to expose them. On several nodes
#     MLflow binds to the head address (rank 0 and Tune trials may run on any node).
#   - Teardown stops only this job's Ray processes (the `ray start --block` steps it started).
# Preemption: the SBATCH line below asks for SIGUSR1 300 s before the time limit; the script
# passes USR1 or TERM on to the command as SIGUSR1, which checkpoints and exits with status 75. If the job
# was submitted with --requeue, the script then requeues it and the rerun resumes from the
# checkpoint (clrdist train: same MLflow run; tuning/sweep.py: Tuner.restore).
# Every path clrdist writes (stores, checkpoint.storage_path, the MLflow database) must be on a
# shared file system. Set CLRDIST_VENV to the virtual environment to activate (default: .venv).
#
#SBATCH --job-name=clrdist-ray
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --output=clrdist-ray-%j.log

set -euo pipefail

die() { echo "clrdist: error: $*" >&2; exit 1; }
say() { echo "clrdist: $*"; }

# -- arguments --------------------------------------------------------------------------------
mlflow=0
min_nodes=
join_timeout=300
while [[ $# -gt 0 ]]; do
    case $1 in
        --mlflow) mlflow=1; shift ;;
        --min-nodes) min_nodes=${2:?--min-nodes needs a number}; shift 2 ;;
        --join-timeout) join_timeout=${2:?--join-timeout needs seconds}; shift 2 ;;
        --) shift; break ;;
        *) die "unknown option $1 (expected --mlflow, --min-nodes N, --join-timeout S, or -- COMMAND)" ;;
    esac
done
command_given=0
if [[ $# -gt 0 ]]; then command_given=1; fi
[[ -n ${SLURM_JOB_ID:-} ]] || die "not inside a SLURM job (submit with sbatch)"

venv=${CLRDIST_VENV:-.venv}
if [[ -f "$venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi
command -v ray >/dev/null || die "ray not found (activate the environment or set CLRDIST_VENV)"

# -- allocation ---------------------------------------------------------------------------------
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${SLURMD_NODENAME:-${nodes[0]}}  # the batch step runs on the head
workers=()
for node in "${nodes[@]}"; do
    [[ $node == "$head_node" ]] || workers+=("$node")
done
min_nodes=${min_nodes:-${#nodes[@]}}
cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
gpus=${SLURM_GPUS_ON_NODE:-0}

# -- head address: a named interface, an explicit address, or the routable one; never loopback --
head_ip=${CLRDIST_RAY_HEAD_IP:-}
if [[ -n ${CLRDIST_RAY_IFACE:-} ]]; then
    head_ip=$(ip -o -4 addr show dev "$CLRDIST_RAY_IFACE" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
    [[ -n $head_ip ]] || die "CLRDIST_RAY_IFACE=$CLRDIST_RAY_IFACE has no IPv4 address on $head_node"
elif [[ -z $head_ip ]]; then
    head_ip=$(ip -o -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}' || true)
    if [[ -z $head_ip || $head_ip == 127.* ]]; then
        head_ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v -e '^127\.' -e ':' -e '^$' | head -n 1 || true)
    fi
fi
if [[ -z $head_ip || $head_ip == 127.* || $head_ip == localhost ]]; then
    die "no routable address for the head node $head_node (found '${head_ip}'); set CLRDIST_RAY_IFACE (e.g. ib0) or CLRDIST_RAY_HEAD_IP"
fi

# -- ports: a block per job id, so jobs sharing a node cannot collide --------------------------
base=${CLRDIST_RAY_PORT_BASE:-$((20000 + (SLURM_JOB_ID % 24) * 500))}
gcs_port=$base
dashboard_port=$((base + 1))
client_port=$((base + 2))
mlflow_port=$((base + 3))
min_worker_port=$((base + 10))
max_worker_port=$((base + 499))
# A node's own services (node manager, object manager, agents, metrics) take ports the OS picks
# free (Ray's fixed default 52365 for the agent would collide); workers take the job's range.
node_ports=(--dashboard-agent-listen-port=0
            --min-worker-port="$min_worker_port" --max-worker-port="$max_worker_port")
extra=()
if [[ -n ${CLRDIST_RAY_OBJECT_STORE_MB:-} ]]; then
    extra+=(--object-store-memory="$((CLRDIST_RAY_OBJECT_STORE_MB * 1024 * 1024))")
fi
address="$head_ip:$gcs_port"
dashboard_host=${CLRDIST_DASHBOARD_HOST:-127.0.0.1}

# -- the job's token and its cluster.env (on a file system the login node sees) ---------------
job_dir=${CLRDIST_RAY_DIR:-$HOME/.clrdist/ray}/$SLURM_JOB_ID
mkdir -p "$job_dir"
chmod 700 "$job_dir"
token_file=$job_dir/token
if [[ ! -s $token_file ]]; then  # a requeued job keeps its token
    (umask 077; python -c 'import secrets; print(secrets.token_hex(32))' >"$token_file.tmp")
    mv "$token_file.tmp" "$token_file"
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$token_file
tmp_root=${CLRDIST_RAY_TMPDIR:-/tmp}

# -- teardown: only what this job started ------------------------------------------------------
step_pids=()
mlflow_pid=
cmd_pid=
cleanup() {
    trap - EXIT TERM INT USR1
    rm -f "$job_dir/ready"
    if [[ -n $cmd_pid ]]; then kill -TERM "$cmd_pid" 2>/dev/null || true; fi
    if [[ -n $mlflow_pid ]]; then step_pids+=("$mlflow_pid"); fi
    # srun answers SIGTERM by killing its step: `ray start --block` and every process of that
    # node's Ray cluster (SLURM's process tracking), nothing of other jobs
    for pid in "${step_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${step_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${CLRDIST_KEEP_RAY_TMP:-0} != 1 ]]; then
        for node in "${nodes[@]}"; do
            srun --overlap --nodes=1 --ntasks=1 -w "$node" rm -rf "$tmp_root/clrdist-ray-$SLURM_JOB_ID-$node" || true
        done
    fi
}
trap cleanup EXIT

start_node() {  # start_node NODE ARGS...: `ray start --block` as a job step on NODE
    local node=$1
    shift
    srun --overlap --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "$node" \
        ray start --block --disable-usage-stats --temp-dir="$tmp_root/clrdist-ray-$SLURM_JOB_ID-$node" \
        --num-cpus="$cpus" --num-gpus="$gpus" "${node_ports[@]}" "${extra[@]}" "$@" &
    step_pids+=("$!")
}

wait_until() {  # wait_until WHAT TIMEOUT COMMAND...: poll COMMAND every second
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        for pid in "${step_pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "a Ray node step exited while waiting for $what (see the log above)"
        done
        ((SECONDS < deadline)) || die "$what: not ready after ${timeout}s"
        sleep 1
    done
}

# -- MLflow first: one server on the head, the only writer of its store; every Ray process ------
# (started below, so Tune trials and `ray job submit` drivers too) inherits MLFLOW_TRACKING_URI
if [[ $mlflow == 1 ]]; then
    mlflow_host=${CLRDIST_MLFLOW_HOST:-}
    if [[ -z $mlflow_host ]]; then
        if [[ ${#nodes[@]} -gt 1 ]]; then mlflow_host=$head_ip; else mlflow_host=127.0.0.1; fi
    fi
    store=${CLRDIST_MLFLOW_STORE:-sqlite:///$PWD/mlflow.db}
    artifacts=${CLRDIST_MLFLOW_ARTIFACTS:-$PWD/mlartifacts}
    mlflow server --host "$mlflow_host" --port "$mlflow_port" --workers 1 \
        --backend-store-uri "$store" --artifacts-destination "$artifacts" \
        --allowed-hosts "$mlflow_host:$mlflow_port,127.0.0.1:$mlflow_port,localhost:$mlflow_port" &
    mlflow_pid=$!
    export MLFLOW_TRACKING_URI=http://$mlflow_host:$mlflow_port
    wait_until "the MLflow server at $MLFLOW_TRACKING_URI" 120 \
        python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=5)' "$MLFLOW_TRACKING_URI"
    say "MLflow tracking server $MLFLOW_TRACKING_URI (store $store)"
fi

# -- head, then the other nodes ----------------------------------------------------------------
# Every Ray process inherits RAY_ADDRESS: Ray's own state-API calls then find this job's cluster
# even where other Ray clusters run on the same node.
export RAY_ADDRESS=$address
say "Ray head on $head_node ($address), ${#nodes[@]} node(s), $cpus CPUs and $gpus GPUs each, ports $base-$max_worker_port"
start_node "$head_node" --head --node-ip-address="$head_ip" --port="$gcs_port" \
    --dashboard-host="$dashboard_host" --dashboard-port="$dashboard_port" \
    --ray-client-server-port="$client_port"
count_nodes='import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
sys.exit(0 if sum(n["Alive"] for n in ray.nodes()) >= int(sys.argv[2]) else 1)'
# the head's node must be registered (not just its GCS up) before others can join
wait_until "the Ray head at $address" "$join_timeout" python -c "$count_nodes" "$address" 1
for node in "${workers[@]}"; do
    start_node "$node" --address="$address"
done

wait_until "$min_nodes of ${#nodes[@]} nodes joining $address" "$join_timeout" \
    python -c "$count_nodes" "$address" "$min_nodes"
say "$min_nodes node(s) joined"


{
    echo "RAY_ADDRESS=$address"
    echo "RAY_DASHBOARD_ADDRESS=http://$dashboard_host:$dashboard_port"
    echo "RAY_AUTH_MODE=token"
    echo "RAY_AUTH_TOKEN_PATH=$token_file"
    echo "CLRDIST_HEAD_NODE=$head_node"
    if [[ -n ${MLFLOW_TRACKING_URI:-} ]]; then echo "MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI"; fi
} >"$job_dir/cluster.env"
touch "$job_dir/ready"
cat <<EOF
clrdist: cluster up. From the login node:
  ssh -N -L $dashboard_port:127.0.0.1:$dashboard_port $head_node &   # Ray dashboard + job server
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$token_file
  ray job submit --address http://127.0.0.1:$dashboard_port --working-dir . -- python tuning/sweep.py tuning/jetclr_temperature.yaml
EOF
if [[ $mlflow == 1 ]]; then echo "  ssh -N -L $mlflow_port:127.0.0.1:$mlflow_port $head_node &   # then: open http://127.0.0.1:$mlflow_port"; fi

# -- preemption: USR1 (time-limit warning) or TERM asks the command to checkpoint and stop ------
# The first signal reaches the command as SIGUSR1 (clrdist train: checkpoint at the next logging
# step, exit 75; tuning/sweep.py: Tune saves its state, exit 75); a second TERM passes through.
forwarded=
# shellcheck disable=SC2317  # called from the traps below
forward() {
    [[ -n $cmd_pid ]] || exit 0  # keep-alive mode: just stop
    local sig=USR1
    if [[ -n $forwarded && $1 == TERM ]]; then sig=TERM; fi
    forwarded=$1
    say "received SIG$1; sending SIG$sig to the command"
    kill -s "$sig" "$cmd_pid" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
trap 'forward TERM' INT  # background commands ignore SIGINT

if [[ $command_given == 0 ]]; then
    say "keeping the cluster up until the job is cancelled or times out"
    while true; do
        wait "${step_pids[0]}" && break  # the head step
        kill -0 "${step_pids[0]}" 2>/dev/null || break
    done
    exit 0
fi

say "running: $*"
# arguments are passed through as given, never re-parsed by a shell
"$@" &
cmd_pid=$!
status=0
while true; do
    if wait "$cmd_pid"; then status=0; else status=$?; fi
    kill -0 "$cmd_pid" 2>/dev/null || break  # wait returned because a signal was trapped
done
cmd_pid=
say "command exited with status $status"
if [[ $status == 75 && -n $forwarded ]]; then
    if scontrol show job -o "$SLURM_JOB_ID" | grep -q ' Requeue=1'; then
        say "checkpoint written; requeueing job $SLURM_JOB_ID to resume it"
        cleanup
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    say "checkpoint written; resubmit the same command to resume (sbatch --requeue does it automatically)"
fi
exit "$status"
