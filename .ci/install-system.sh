#!/usr/bin/env bash
# Install the system packages the test suite needs: a single-node SLURM
# (slurmctld + slurmd + client tools) and munge, used by
# deploy/slurm/testslurm.sh and tests/test_slurm_infra.py.
# Idempotent: does nothing when the tools are already on PATH.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

have_all() {
    command -v slurmctld >/dev/null 2>&1 &&
        command -v slurmd >/dev/null 2>&1 &&
        command -v munged >/dev/null 2>&1 &&
        command -v sbatch >/dev/null 2>&1
}

if have_all; then
    echo "install-system: slurm and munge already installed, skipping"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update -qq
# slurm-wlm pulls in slurmctld, slurmd and slurm-client; munge is the auth daemon.
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null

# Debian's package postinst may try to start the services; under a container
# without systemd this is a no-op. Our test SLURM runs its own private daemons
# (deploy/slurm/testslurm.sh), so nothing else is needed here.
if ! have_all; then
    echo "install-system: slurm/munge still missing after apt-get install" >&2
    exit 1
fi
echo "install-system: installed $(slurmctld -V 2>/dev/null || echo slurm) and $(munged -V 2>&1 | head -n1)"
