#!/usr/bin/env bash
# Start a Ray cluster on a SLURM allocation: the first node is the head, the others join it.
#
#   sbatch slurm/ray_cluster.sh                          keep the cluster up for `ray job submit`
#   sbatch slurm/ray_cluster.sh -- clrdist train configs/jetclr_toptag.yaml --set scaling.num_workers=8
#                                                        run one command on it, then stop
#
# Size the allocation with sbatch's own flags, e.g. `sbatch --nodes=4 --gpus-per-node=4 ...`.
# The dashboard and job server bind to 127.0.0.1 on the head node; reach them through an SSH
# tunnel (ssh -L 8265:127.0.0.1:8265 HEAD) or set CLRDIST_DASHBOARD_HOST=0.0.0.0 to expose them.
# Every path clrdist writes (stores, checkpoint.storage_path, the MLflow database) must be on a
# shared file system. Set CLRDIST_VENV to the virtual environment to activate (default: .venv).
#
#SBATCH --job-name=clrdist-ray
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=clrdist-ray-%j.log

set -euo pipefail

venv=${CLRDIST_VENV:-.venv}
if [[ -f "$venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi

port=${CLRDIST_RAY_PORT:-6379}
dashboard_host=${CLRDIST_DASHBOARD_HOST:-127.0.0.1}
cpus=${SLURM_CPUS_PER_TASK:-1}
gpus=${SLURM_GPUS_ON_NODE:-0}

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')
address="$head_ip:$port"
echo "clrdist: Ray head on $head_node ($address), ${#nodes[@]} node(s), $cpus CPUs and $gpus GPUs each"

srun --nodes=1 --ntasks=1 -w "$head_node" \
    ray start --head --node-ip-address="$head_ip" --port="$port" \
    --num-cpus="$cpus" --num-gpus="$gpus" --dashboard-host="$dashboard_host" --block &

# Wait for the head to accept connections before the workers join.
for _ in $(seq 60); do
    if ray status --address="$address" >/dev/null 2>&1; then break; fi
    sleep 2
done

for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" \
        ray start --address="$address" --num-cpus="$cpus" --num-gpus="$gpus" --block &
done

export RAY_ADDRESS="$address"
if [[ "${1:-}" == "--" ]]; then
    shift
    echo "clrdist: running: $*"
    # arguments are passed through as given, never re-parsed by a shell
    status=0
    "$@" || status=$?
    ray stop --force >/dev/null 2>&1 || true
    exit "$status"
fi
echo "clrdist: cluster up; submit with: ray job submit --address http://127.0.0.1:8265 --working-dir . -- python tuning/sweep.py tuning/jetclr_temperature.yaml"
wait
