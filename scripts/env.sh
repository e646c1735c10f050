# Sourced by the scripts: puts .venv's nats-server and NVRTC where the binaries look.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$root/.venv/bin:$PATH"
for d in "$root"/.venv/lib/python3*/site-packages/nvidia/cu13/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
